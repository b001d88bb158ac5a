"""pytest_chatstream._recording: a recorded cassette settled once its test's teardown is known, and which test
of a run verifies a shared cassette. Plain code, tested without pytester (tests/test_plugin_modes.py and
tests/test_plugin_staging.py run them end to end)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_chatstream._recording import PendingRecording, settle_recording, verifies_shared
from pytest_chatstream._report import Report


class FakeRun:
    """A CassetteRun's finish(): the bytes written when asked to keep the recording, None when dropped."""

    def __init__(self, raises: OSError | None = None) -> None:
        self.cassette = Path("cassettes/t/a")
        self.raises = raises
        self.kept: list[bool] = []

    def finish(self, keep: bool) -> int | None:
        self.kept.append(keep)
        if self.raises is not None:
            raise self.raises
        return 123 if keep else None


class FakeBoard:
    def __init__(self) -> None:
        self.released: list[tuple[Path, bool]] = []

    def release(self, cassette: Path, recorded: bool) -> None:
        self.released.append((cassette, recorded))


def settle(run: FakeRun, call_passed: bool, teardown_passed: bool, teardown_known: bool = True):
    report, board = Report(), FakeBoard()
    problem = settle_recording(PendingRecording(run, "t/a", board), report, "t.py::a", call_passed,
                               teardown_passed, teardown_known)
    return report, board, problem


def test_a_passed_test_writes_its_cassette_and_frees_the_claim():
    run = FakeRun()
    report, board, problem = settle(run, True, True)
    assert run.kept == [True] and report.recorded == {"t/a": 123} and problem is None
    assert board.released == [(run.cassette, True)]


@pytest.mark.parametrize(("call_passed", "teardown_passed", "where"),
                         [(False, True, "not_written"), (True, False, "teardown_failed"),
                          (False, False, "not_written")])
def test_a_failed_call_or_teardown_keeps_the_old_cassette(call_passed, teardown_passed, where):
    run = FakeRun()
    report, board, problem = settle(run, call_passed, teardown_passed)
    assert run.kept == [False] and report.recorded == {} and problem is None
    assert getattr(report, where) == {"t/a": "t.py::a"}
    assert board.released == [(run.cassette, False)]  # the next test that shares it may record it


def test_a_failed_write_is_reported_on_the_teardown_and_still_frees_the_claim():
    run = FakeRun(OSError(28, "No space left on device"))
    report, board, problem = settle(run, True, True)
    assert problem.startswith("chatstream could not write the cassette t/a: OSError(28")
    assert report.not_written == {"t/a": "t.py::a"} and board.released == [(run.cassette, False)]


def test_without_a_teardown_report_a_failed_write_raises():
    board = FakeBoard()
    run = FakeRun(OSError("disk gone"))
    with pytest.raises(OSError, match="disk gone"):
        settle_recording(PendingRecording(run, "t/a", board), Report(), "t.py::a", True, False, False)
    assert board.released == [(run.cassette, False)]


def test_the_recorder_verifies_a_shared_cassette_when_it_runs_else_the_first_user():
    selected = {"": {"t.py::a", "t.py::b", "t.py::c"}, "shared": ["t.py::b", "t.py::c"]}
    assert verifies_shared(selected, "t.py::c", "shared", "t.py::c")
    assert not verifies_shared(selected, "t.py::b", "shared", "t.py::c")
    # its recorder is not in this run: the first test of the run that uses it verifies it
    assert verifies_shared(selected, "t.py::b", "shared", "t.py::gone")
    assert not verifies_shared(selected, "t.py::c", "shared", "t.py::gone")
    assert verifies_shared({}, "t.py::x", "shared", None)


def test_plan_cassette_follows_the_mode_and_shares_a_named_cassette(tmp_path: Path):
    from pytest_chatstream._recording import plan_cassette
    from pytest_chatstream._settings import Action, Mode

    cassette = tmp_path / "shared"
    selected = {"": {"t.py::a", "t.py::b"}, "shared": ["t.py::a", "t.py::b"]}
    assert plan_cassette(Mode.REPLAY, cassette, "shared", "t.py::a", True, selected, "run") == \
        (Action.MISSING, None, None)
    assert plan_cassette(Mode.VERIFY, cassette, "shared", "t.py::a", True, selected, "run")[0] is Action.MISSING
    cassette.mkdir()
    (cassette / "manifest.json").write_text('{"extra": {"test": "t.py::b"}}')
    assert plan_cassette(Mode.REPLAY, cassette, "shared", "t.py::a", True, selected, "run")[0] is Action.REPLAY
    # verify: the test that recorded it verifies it, the other replays it
    assert plan_cassette(Mode.VERIFY, cassette, "shared", "t.py::b", True, selected, "run")[:2] == \
        (Action.VERIFY, "t.py::b")
    assert plan_cassette(Mode.VERIFY, cassette, "shared", "t.py::a", True, selected, "run")[0] is Action.REPLAY
    assert plan_cassette(Mode.VERIFY, cassette, "shared", "t.py::a", False, selected, "run")[0] is Action.VERIFY
    assert plan_cassette(Mode.REPEAT, cassette, "shared", "t.py::a", True, selected, "run") == \
        (Action.REPEAT, None, None)


def test_selected_users_lists_each_named_cassettes_tests_in_run_order():
    from pytest_chatstream._recording import selected_users

    users = selected_users([("t.py::b", "shared"), ("t.py::a", None), ("t.py::c", "shared"), ("t.py::d", "own")])
    assert users == {"": {"t.py::a", "t.py::b", "t.py::c", "t.py::d"}, "shared": ["t.py::b", "t.py::c"],
                     "own": ["t.py::d"]}
    assert verifies_shared(users, "t.py::b", "shared", None) and not verifies_shared(users, "t.py::c", "shared", None)


def test_tests_needing_the_model_are_those_that_record_verify_or_repeat(tmp_path: Path):
    from pytest_chatstream._recording import tests_needing_model
    from pytest_chatstream._settings import Mode

    (tmp_path / "t" / "have").mkdir(parents=True)
    (tmp_path / "t" / "have" / "manifest.json").write_text("{}")
    tests = [("t.py::have", "t/have"), ("t.py::absent", "t/absent")]
    assert tests_needing_model(Mode.ALL, tmp_path, tests) == ["t.py::have", "t.py::absent"]
    assert tests_needing_model(Mode.MISSING, tmp_path, tests) == ["t.py::absent"]
    assert tests_needing_model(Mode.VERIFY, tmp_path, tests) == ["t.py::have"]
    assert tests_needing_model(Mode.REPEAT, tmp_path, tests) == ["t.py::have", "t.py::absent"]
    assert tests_needing_model(Mode.REPLAY, tmp_path, tests) == []


def test_a_model_that_fails_to_load_frees_the_claim_for_the_next_test(tmp_path: Path):
    from pytest_chatstream._recording import open_run
    from pytest_chatstream._settings import Action

    board = FakeBoard()

    def broken() -> tuple:
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        open_run(broken, tmp_path / "c", Action.RECORD, "compact", {}, "t.py::a", board)
    assert board.released == [(tmp_path / "c", False)]
    with pytest.raises(RuntimeError):  # verifying: no claim to free
        open_run(broken, tmp_path / "c", Action.VERIFY, "compact", {}, "t.py::a", None)


def test_a_run_opens_on_the_loaded_model_and_names_its_test(tmp_path: Path):
    from pytest_chatstream._recording import open_run
    from pytest_chatstream._settings import Action

    board = FakeBoard()
    run, model, tokenizer = open_run(lambda: ("model", "tokenizer"), tmp_path / "c", Action.VERIFY, "compact",
                                     {"seed": 3}, "t.py::a", board)
    try:
        assert (model, tokenizer) == ("model", "tokenizer") and run.action is Action.VERIFY
        assert run.cassette == tmp_path / "c" and board.released == []
        assert run.recorder.extra_metadata == {"test": "t.py::a"} and run.recorder.sampling == {"seed": 3}
    finally:
        run.finish(False)
    assert not run.target.exists()  # a verify run's temporary directory is gone
