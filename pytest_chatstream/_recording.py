"""``--probe``: what a test does with its cassette (record, verify, replay or report it missing), which tests
load the live model, which test of a run verifies a shared cassette, opening a test's live run, and the
settlement of a recorded cassette once its test's teardown is known (written if the call and the whole
teardown passed, else the old one kept)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ._report import Report
from ._session import CassetteRun, recorded_by
from ._settings import Action, Mode, decide_action
from ._staging import ClaimBoard


@dataclasses.dataclass
class PendingRecording:
    """A recorded cassette waiting for its test's teardown to end: written if the call and teardown passed."""

    run: CassetteRun
    rel: str
    board: ClaimBoard


def settle_recording(pending: PendingRecording, report: Report, test: str, call_passed: bool,
                     teardown_passed: bool, teardown_known: bool) -> str | None:
    """Write ``pending``'s cassette if the call and teardown passed, else keep the old one; note it in ``report``.

    Returns why the write failed (for the teardown's report) when it raised an OSError and the teardown is
    known (``teardown_known``); without a teardown report the OSError is raised.
    """
    problem = None
    size = None
    try:
        size = pending.run.finish(call_passed and teardown_passed)
    except OSError as error:
        if not teardown_known:
            raise
        problem = f"chatstream could not write the cassette {pending.rel}: {error!r}"
    finally:
        pending.board.release(pending.run.cassette, recorded=size is not None)
    if size is not None:
        report.add_recorded(pending.rel, size)
    elif call_passed and teardown_passed:
        report.not_written[pending.rel] = test  # the write itself failed (the teardown says why)
    elif call_passed:
        report.teardown_failed[pending.rel] = test
    else:
        report.not_written[pending.rel] = test
    return problem


def selected_users(tests: Iterable[tuple[str, str | None]]) -> dict:
    """What :func:`verifies_shared` is given: the selected tests that use each named cassette, in run order,
    and under "" the set of every selected test. ``tests``: (node id, its named cassette or None), in run order.
    """
    users: dict = {"": []}
    for test, named in tests:
        users[""].append(test)
        if named is not None:
            users.setdefault(named, []).append(test)
    users[""] = set(users[""])
    return users


def tests_needing_model(mode: Mode, cassette_dir: Path, tests: Iterable[tuple[str, str]]) -> list[str]:
    """Of ``tests`` (node id, cassette relative to ``cassette_dir``), those that run the live model under
    ``mode``: they record, verify or repeat their cassette."""
    live = (Action.RECORD, Action.VERIFY, Action.REPEAT)
    return [test for test, rel in tests
            if decide_action(mode, (cassette_dir / rel / "manifest.json").is_file()) in live]


def verifies_shared(selected: dict, test: str, rel: str, recorder: str | None) -> bool:
    """Whether ``test`` verifies the shared cassette ``rel``: the test that recorded it, when this run runs
    it; else the run's first test that uses it (its manifest names a test this run does not run).

    ``selected``: the selected tests that use each named cassette, in run order ("": every selected test)."""
    if recorder is not None and recorder in selected.get("", ()):
        return recorder == test
    users = selected.get(rel, ())
    return not users or users[0] == test


def plan_cassette(mode: Mode, cassette: Path, rel: str, test: str, named: bool, selected: dict,
                  run_id: str) -> tuple[Action, str | None, ClaimBoard | None]:
    """What ``test`` does with ``cassette`` in this run: ``(action, the test that recorded it when verifying,
    the run's claim board when recording)``. ``named``: the test names its cassette (others may share it).

    The mode comes from the command line only; nothing else can make a test record. Of the tests that share
    a cassette one verifies it and one records it; the others replay it.
    """
    action = decide_action(mode, (cassette / "manifest.json").is_file())
    recorder = recorded_by(cassette) if action is Action.VERIFY else None
    if action is Action.VERIFY and named and not verifies_shared(selected, test, rel, recorder):
        action = Action.REPLAY  # a shared cassette: one test of the run verifies it, the others replay it
    board = ClaimBoard.for_run(run_id) if action is Action.RECORD else None
    if board is not None and not board.acquire_or_wait(cassette):
        action = Action.REPLAY  # a shared cassette another test of this run has just recorded
    return action, recorder, board


def open_run(load_model: Callable[[], tuple[Any, Any]], cassette: Path, action: Action, fidelity: str,
             sampling: dict, test: str, board: ClaimBoard | None) -> tuple[CassetteRun, Any, Any]:
    """Load the live ``(model, tokenizer)`` and open ``test``'s run on ``cassette``: ``(run, model, tokenizer)``.

    When either fails, ``test``'s claim on the cassette (``board``, when it records) is released, so the next
    test that shares the cassette records it.
    """
    try:
        model, tokenizer = load_model()
        run = CassetteRun(cassette, action, fidelity, sampling=sampling, extra_metadata={"test": test})
    except BaseException:
        if board is not None:
            board.release(cassette, recorded=False)
        raise
    return run, model, tokenizer
