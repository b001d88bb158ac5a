"""``--probe=verify``: a test's verdict (the live run compared with its cassette) for the report, and the
failure message of a live model that diverged, the verdict noted in the run's report. Plain code: the plugin
fails the test."""

from __future__ import annotations

import traceback
from typing import Any

from ._report import Report


def recorded_by_note(verdict: dict) -> str:
    recorder = verdict.get("recorded_by")
    return f" Its manifest says {recorder} recorded it (moved or copied from that test?)." if recorder else ""


def format_error(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def verdict_for(verdict: dict, test: str, cassette: str, recorded_by: str | None) -> dict:
    """``verdict`` (``CassetteRun.verify()``'s) with the test, its cassette and, when another test recorded the
    cassette, that test."""
    verdict["test"] = test
    verdict["cassette"] = cassette
    if recorded_by is not None:
        verdict["recorded_by"] = recorded_by
    return verdict


def error_verdict(error: BaseException, test: str, cassette: str, recorded_by: str | None) -> dict:
    """The verdict of a test whose comparison with its cassette raised ``error``."""
    verdict = {"status": "error", "reason": f"{type(error).__name__}: {error}", "test": test, "cassette": cassette}
    if recorded_by is not None:
        verdict["recorded_by"] = recorded_by
    return verdict


def diverged_message(verdict: dict) -> str | None:
    """The failure of a test whose live model diverged from its cassette; None when it did not."""
    if verdict.get("status") != "diverged":
        return None
    return (
        f"the live model diverged from the cassette {verdict['cassette']} at step "
        f"{verdict.get('first_divergent_step')}: recorded token {verdict.get('recorded_token')!r}, "
        f"live token {verdict.get('live_token')!r}, largest logit difference "
        f"{verdict.get('max_logit_diff')}.{recorded_by_note(verdict)} "
        f"Re-record it with: pytest --probe=all {verdict['test']!r}"
    )


def verify_run(run: Any, report: Report, test: str, cassette: str, recorded_by: str | None) -> str | None:
    """Compare ``run`` (a ``CassetteRun``: ``test``'s live run) with ``cassette``, note the verdict in ``report``;
    returns the test's failure message when the live model diverged, else None."""
    verdict = verdict_for(run.verify(), test, cassette, recorded_by)
    report.verified[test] = verdict
    return diverged_message(verdict)


def note_error(report: Report, error: BaseException, test: str, cassette: str, recorded_by: str | None) -> None:
    """Note in ``report`` that comparing ``test``'s live run with its cassette raised ``error``."""
    report.verified[test] = error_verdict(error, test, cassette, recorded_by)


def verify_after_call(run: Any, report: Report, test: str, cassette: str, recorded_by: str | None,
                      call_failed: bool) -> tuple[str | None, str | None]:
    """Compare ``test``'s live run with its cassette once its call ended, never in place of its own failure.

    Returns ``(failure, section)``: after a passed call, the test's failure when the model diverged (an error
    comparing is noted and raised); after a failed call (``call_failed``), no failure, and when comparing
    raised too, a report section that says so (the verdict is noted either way).
    """
    try:
        diverged = verify_run(run, report, test, cassette, recorded_by)
    except Exception as error:
        note_error(report, error, test, cassette, recorded_by)
        if not call_failed:
            raise
        return None, ("comparing the live run with the cassette failed too (the test's own failure is above):\n"
                      + format_error(error))
    return (None if call_failed else diverged), None
