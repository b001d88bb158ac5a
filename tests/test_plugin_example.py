"""examples/chat_app: a downstream app's own tests, on the plugin's public fixtures only.

The example is copied away from the repository, so its ``chatstream_model_path``
(``../../fixtures/tiny-chat``) does not exist: replay must pass without any model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _chat_project import cassette_bytes

from chatstream.bundled import bundled_model_path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "chat_app"


@pytest.fixture
def example(pytester: pytest.Pytester) -> Path:
    copy = pytester.path / "chat_app"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    pytester.chdir()
    return copy


def test_example_replays_its_committed_cassettes_without_a_model(pytester: pytest.Pytester, example: Path) -> None:
    assert not (example / "../../fixtures/tiny-chat").exists()
    result = pytester.runpytest(str(example))
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["mode: replay; 4 test(s) used cassettes in *", "replayed: 4 cassette(s)"])


def test_example_re_records_with_probe(pytester: pytest.Pytester, example: Path) -> None:
    cassettes = example / "tests" / "cassettes"
    before = cassette_bytes(cassettes)
    result = pytester.runpytest(str(example), "--probe", "--probe-model", str(bundled_model_path()), "-k", "greets")
    result.assert_outcomes(passed=1, deselected=3)
    result.stdout.fnmatch_lines(["recorded: 1 cassette(s), *"])
    after = cassette_bytes(cassettes)
    assert sorted(after) == sorted(before)
    greeting = "tests/test_concierge/test_greets_the_guest"
    changed = {name.rsplit("/", 1)[0] for name in after if after[name] != before[name]}
    assert changed == {greeting}  # re-recorded (a new timestamp at least); the others untouched
    manifest = json.loads(after[f"{greeting}/manifest.json"])
    assert manifest["extra"]["test"] == "tests/test_concierge.py::test_greets_the_guest"
    pytester.runpytest(str(example)).assert_outcomes(passed=4)
