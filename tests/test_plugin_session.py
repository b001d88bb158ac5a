"""pytest_chatstream._session: a test's recording committed only on success, verify, replay, staleness.

Plain code, tested without pytest's plugin machinery, on the bundled tiny model.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatstream.bundled import bundled_model_path
from chatstream.cassettes.fingerprint import fingerprint_model_dir
from chatstream.engine.chat_prompt_presets import ChatPromptChatML
from chatstream.engine.generation import ChatGenerator, GenerationParams
from pytest_chatstream._session import (
    CassetteRun,
    LiveTransformer,
    missing_message,
    recorded_by,
    replay_transformer,
    stale_message,
    stale_parts,
)
from pytest_chatstream._settings import Action

PARAMS = GenerationParams(max_new_tokens=8, seed=3, temperature=0.9)


@functools.lru_cache(maxsize=1)
def live() -> tuple:
    path = bundled_model_path()
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def chat(transformer: LiveTransformer | object, text: str = "Hello") -> str:
    prompt = ChatPromptChatML()
    prompt.add_requester_msg(text)
    prompt.add_responder_msg(None)
    generator = ChatGenerator(transformer.get_model(), transformer.get_tokenizer(), "cpu", PARAMS,
                              transformer.get_token_sampler())
    return generator.generate_text(prompt)


def record(cassette: Path, passed: bool, text: str = "Hello") -> tuple[str, int | None]:
    run = CassetteRun(cassette, Action.RECORD, "compact", sampling=PARAMS.to_dict(), extra_metadata={"test": "t::x"})
    answer = chat(run.wrap(*live(), None), text)
    return answer, run.finish(passed)


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_a_passed_recording_replaces_the_cassette_and_replays(tmp_path: Path) -> None:
    cassette = tmp_path / "cassettes" / "t"
    answer, size = record(cassette, passed=True)
    assert size == sum(len(b) for b in files(cassette).values()) and size > 0
    assert [p.name for p in cassette.parent.iterdir()] == ["t"]  # the staging directory became it
    assert recorded_by(cassette) == "t::x"
    assert chat(replay_transformer(cassette)) == answer


def test_a_failed_recording_keeps_the_old_cassette(tmp_path: Path) -> None:
    cassette = tmp_path / "t"
    record(cassette, passed=True)
    before = files(cassette)
    _, size = record(cassette, passed=False, text="Bye")
    assert size is None and files(cassette) == before
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


def test_verify_compares_a_live_run_and_writes_no_cassette(tmp_path: Path) -> None:
    cassette = tmp_path / "t"
    record(cassette, passed=True)
    before = files(cassette)
    run = CassetteRun(cassette, Action.VERIFY, "compact", sampling=None, extra_metadata=None)
    chat(run.wrap(*live(), None))
    verdict = run.verify()
    assert verdict["status"] == "identical" and verdict["steps_compared"] > 0
    assert run.finish(passed=True) is None
    assert files(cassette) == before and not run.target.exists()


def test_a_cassette_run_only_records_verifies_or_repeats(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RECORD, VERIFY or REPEAT"):
        CassetteRun(tmp_path / "t", Action.REPLAY, "compact", None, None)


def test_stale_parts_name_what_changed(tmp_path: Path) -> None:
    cassette = tmp_path / "t"
    record(cassette, passed=True)
    manifest = json.loads((cassette / "manifest.json").read_text())
    current = fingerprint_model_dir(bundled_model_path())
    assert stale_parts(manifest, current) == []
    changed = {**current, "weights": "sha256:other", "chat_template": None}  # None: nothing to compare
    assert stale_parts(manifest, changed) == ["weights"]
    message = stale_message(cassette, ["weights"], Path("/m"), "t.py::x")
    assert "is stale: the weights of /m changed" in message
    assert "pytest --probe=all --probe-model=/m 't.py::x'" in message


def test_missing_message_names_the_path_and_the_command() -> None:
    assert missing_message("t.py::x", "fixtures/cassettes/t/x") == (
        "no cassette for t.py::x at fixtures/cassettes/t/x; record it on a machine with the model: "
        "pytest --probe=missing --probe-model=PATH 't.py::x'"
    )


def test_a_recording_keeps_only_the_sampling_settings_of_the_fixtures_config() -> None:
    from pytest_chatstream._session import sampling_metadata

    config = {"seed": 7, "temperature": 0.5, "top_k": 3, "chat_prompt": object(), "token_sampler": object()}
    kept = sampling_metadata(config)
    assert kept == {"seed": 7, "temperature": 0.5, "top_k": 3}  # GenerationParams' fields only
