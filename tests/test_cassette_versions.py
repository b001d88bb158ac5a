"""Cassettes hold one normalised form whatever the transformers version that recorded them: the committed
cassettes recorded under 5.23 (`past_key_values`) and 5.24 (`cache`) replay under the installed version,
whichever it is (CI runs this under the locked, the newest and the oldest supported transformers)."""

import json
import sys
from pathlib import Path

import pytest

from chatstream import ChatGenerator, ChatPromptFromTemplate, MockTransformer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from record_version_cassette import CONVERSATIONS  # noqa: E402  (the recorder's own conversations)

CASSETTES = ROOT / "fixtures" / "version-cassettes"
EXPECTED = {"Hello": "Hello! How can I help you today?", "こんにちは": "こんにちは！今日はどんなご用ですか？"}


def test_both_sides_of_the_rename_are_committed():
    assert {"transformers-5.23.0", "transformers-5.24.0"} <= {p.name for p in CASSETTES.iterdir()}


@pytest.mark.parametrize("cassette", sorted(p.name for p in CASSETTES.iterdir()))
def test_a_cassette_from_either_side_of_the_rename_replays_here(cassette):
    path = CASSETTES / cassette
    recorded_under = json.loads((path / "manifest.json").read_text())["versions"]["transformers"]
    assert cassette == f"transformers-{recorded_under}"
    mock = MockTransformer.from_path(path)
    model, tokenizer, sampler = mock.get_model(), mock.get_tokenizer(), mock.get_token_sampler()
    for text, params in CONVERSATIONS:
        prompt = ChatPromptFromTemplate(tokenizer)
        prompt.add_requester_msg(text)
        prompt.add_responder_msg(None)
        assert ChatGenerator(model, tokenizer, "cpu", params, token_sampler=sampler).generate_text(prompt) == \
            EXPECTED[text]
