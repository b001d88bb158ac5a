"""pytest_chatstream._misses: the cassette errors the app caught, and the failure report that shows them first.

Plain code, tested without pytester (tests/test_plugin_fixtures.py runs it end to end)."""

from __future__ import annotations

import logging

from chatstream.exceptions import CassetteMiss
from pytest_chatstream._misses import MissLog, miss_section


def _log_caught(error: BaseException) -> None:
    try:
        raise RuntimeError("the app's handler failed") from error
    except RuntimeError:
        logging.getLogger("app").exception("request failed")


def test_the_cassette_errors_the_app_logged_are_kept_once_in_order():
    first, second = CassetteMiss("no forward for these ids"), CassetteMiss("no sample")
    with MissLog() as misses:
        _log_caught(first)
        _log_caught(first)
        logging.getLogger("app").error("no exception attached")
        try:
            raise ValueError("not a cassette error")
        except ValueError:
            logging.getLogger("app").exception("other failure")
        _log_caught(second)
    _log_caught(CassetteMiss("after the test"))
    assert misses.errors == [first, second]


def test_the_error_behind_a_failure_is_the_first_caught_unless_the_test_raised_it():
    misses = MissLog()
    assert misses.behind(AssertionError("500 != 200")) is None
    first, second = CassetteMiss("a"), CassetteMiss("b")
    misses.errors += [first, second]
    assert misses.behind(AssertionError("500 != 200")) is first
    assert misses.behind(None) is first
    assert misses.behind(second) is None  # the test's own failure is the cassette error: nothing to add


def test_the_section_names_the_caught_error_and_keeps_the_tests_own_failure():
    title, text = miss_section(CassetteMiss("x"), "assert 500 == 200", 1)
    assert title == "chatstream: where the cassette error went"
    assert text == ("The app under test caught this CassetteMiss and answered with an error instead (the captured "
                    "log shows it too). The test itself then failed with:\n\nassert 500 == 200")
    assert "(3 cassette errors in all; this is the first)" in miss_section(CassetteMiss("x"), "", 3)[1]
