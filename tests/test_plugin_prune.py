"""The unused-cassette report a plain run writes, and ``chatstream cassette prune`` acting on it."""

import json
import shutil

import pytest
from _chat_project import make_chat_project

from chatstream.cassettes._unused_report import UNUSED_REPORT_NAME
from chatstream.serving.cassette_tool import prune_cassettes


def test_a_whole_plain_run_writes_the_unused_report_and_prune_removes_those(pytester: pytest.Pytester) -> None:
    project = make_chat_project(pytester)
    pytester.runpytest("--probe", "-k", "greeting or two_turns").assert_outcomes(passed=2, deselected=2)
    cassettes = project / "fixtures" / "cassettes"
    report = cassettes / UNUSED_REPORT_NAME
    assert not report.exists()  # --probe runs write none
    shutil.copytree(cassettes / "test_chat" / "test_greeting", cassettes / "old" / "test_gone")

    pytester.runpytest("test_chat.py", "-k", "greeting").assert_outcomes(passed=1, deselected=3)
    assert not report.exists()  # a run over some paths cannot judge the whole directory

    pytester.runpytest("-k", "greeting or two_turns").assert_outcomes(passed=2, deselected=2)
    data = json.loads(report.read_text())
    assert data["unused"] == ["old/test_gone"] and data["cassette_dir"] == str(cassettes.resolve())

    code, dry = prune_cassettes(cassettes)
    assert code == 0 and dry["would_remove"] == ["old/test_gone"] and (cassettes / "old").is_dir()
    code, done = prune_cassettes(cassettes, yes=True)
    assert done["removed"] == ["old/test_gone"] and not (cassettes / "old").exists()
    assert (cassettes / "test_chat" / "test_greeting" / "manifest.json").is_file()
    pytester.runpytest("-k", "greeting or two_turns").assert_outcomes(passed=2, deselected=2)
    assert json.loads(report.read_text())["unused"] == []
