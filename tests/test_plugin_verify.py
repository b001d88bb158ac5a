"""pytest_chatstream._verify: a verify verdict for the report and the failure of a diverged live model.

Plain code, tested without pytester (tests/test_plugin_modes.py runs --probe=verify end to end)."""

from __future__ import annotations

from pytest_chatstream._verify import diverged_message, error_verdict, format_error, verdict_for

DIVERGED = {"status": "diverged", "first_divergent_step": 3, "recorded_token": 17, "live_token": 42,
            "max_logit_diff": 0.5}


def test_a_verdict_names_the_test_its_cassette_and_who_recorded_it():
    verdict = verdict_for(dict(DIVERGED), "t.py::a", "t/a", None)
    assert verdict["test"] == "t.py::a" and verdict["cassette"] == "t/a" and "recorded_by" not in verdict
    assert verdict_for({"status": "identical"}, "t.py::a", "shared", "t.py::b")["recorded_by"] == "t.py::b"


def test_only_a_diverged_model_fails_and_the_message_says_where_and_how_to_re_record():
    assert diverged_message(verdict_for({"status": "identical"}, "t.py::a", "t/a", None)) is None
    assert diverged_message(verdict_for({"status": "within_tolerance"}, "t.py::a", "t/a", None)) is None
    message = diverged_message(verdict_for(dict(DIVERGED), "t.py::a", "t/a", None))
    assert message.startswith("the live model diverged from the cassette t/a at step 3: recorded token 17, "
                              "live token 42, largest logit difference 0.5.")
    assert message.endswith("Re-record it with: pytest --probe=all 't.py::a'")
    assert "recorded it" not in message
    moved = diverged_message(verdict_for(dict(DIVERGED), "t.py::a", "t/a", "t.py::old"))
    assert "Its manifest says t.py::old recorded it (moved or copied from that test?)." in moved


def test_an_error_in_the_comparison_is_a_verdict_of_its_own():
    try:
        raise KeyError("samples")
    except KeyError as error:
        verdict = error_verdict(error, "t.py::a", "t/a", "t.py::b")
        text = format_error(error)
    assert verdict == {"status": "error", "reason": "KeyError: 'samples'", "test": "t.py::a", "cassette": "t/a",
                       "recorded_by": "t.py::b"}
    assert "Traceback" in text and "KeyError: 'samples'" in text


class FakeRun:
    """A CassetteRun's verify(): the comparison's verdict, or the error comparing raised."""

    def __init__(self, verdict: dict | None = None, raises: Exception | None = None) -> None:
        self.verdict, self.raises = verdict, raises

    def verify(self) -> dict:
        if self.raises is not None:
            raise self.raises
        return dict(self.verdict)


def test_verify_run_notes_the_verdict_and_fails_only_a_diverged_model():
    from pytest_chatstream._report import Report
    from pytest_chatstream._verify import verify_run

    report = Report(mode="verify")
    assert verify_run(FakeRun({"status": "identical"}), report, "t.py::a", "t/a", None) is None
    message = verify_run(FakeRun(DIVERGED), report, "t.py::b", "shared", "t.py::old")
    assert message == diverged_message(report.verified["t.py::b"])
    assert message.startswith("the live model diverged from the cassette shared at step 3")
    assert report.verified == {
        "t.py::a": {"status": "identical", "test": "t.py::a", "cassette": "t/a"},
        "t.py::b": {**DIVERGED, "test": "t.py::b", "cassette": "shared", "recorded_by": "t.py::old"},
    }
    assert report.used == {"t/a", "shared"}


def test_a_comparison_that_raised_is_noted_as_an_error_verdict():
    from pytest_chatstream._report import Report
    from pytest_chatstream._verify import note_error

    report = Report(mode="verify")
    note_error(report, ValueError("bad segment"), "t.py::a", "t/a", None)
    assert report.verified == {"t.py::a": {"status": "error", "reason": "ValueError: bad segment",
                                           "test": "t.py::a", "cassette": "t/a"}}
    assert "comparison failed: 1 test(s)" in report.lines()


def test_after_a_passed_call_a_diverged_model_fails_the_test_and_an_error_is_raised():
    import pytest

    from pytest_chatstream._report import Report
    from pytest_chatstream._verify import verify_after_call

    report = Report(mode="verify")
    assert verify_after_call(FakeRun({"status": "identical"}), report, "t.py::a", "t/a", None, False) == (None, None)
    failure, section = verify_after_call(FakeRun(DIVERGED), report, "t.py::b", "t/b", None, call_failed=False)
    assert failure.startswith("the live model diverged from the cassette t/b at step 3") and section is None
    with pytest.raises(KeyError):
        verify_after_call(FakeRun(raises=KeyError("samples")), report, "t.py::c", "t/c", None, call_failed=False)
    assert [v["status"] for v in report.verified.values()] == ["identical", "diverged", "error"]


def test_after_a_failed_call_the_verdict_is_noted_but_never_replaces_the_tests_failure():
    from pytest_chatstream._report import Report
    from pytest_chatstream._verify import verify_after_call

    report = Report(mode="verify")
    assert verify_after_call(FakeRun(DIVERGED), report, "t.py::a", "t/a", None, call_failed=True) == (None, None)
    assert report.verified["t.py::a"]["status"] == "diverged"
    failure, section = verify_after_call(FakeRun(raises=KeyError("samples")), report, "t.py::b", "t/b", "t.py::x",
                                         call_failed=True)
    assert failure is None
    assert section.startswith("comparing the live run with the cassette failed too (the test's own failure is "
                              "above):\nTraceback") and section.rstrip().endswith("KeyError: 'samples'")
    assert report.verified["t.py::b"] == {"status": "error", "reason": "KeyError: 'samples'", "test": "t.py::b",
                                          "cassette": "t/b", "recorded_by": "t.py::x"}
