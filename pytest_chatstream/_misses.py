"""Cassette errors that the app under test caught, brought back to the test that failed because of them.

A ``CassetteMiss`` raised inside the app before the first byte is caught there: ChatStream logs it
and answers 500, so the test would fail on ``assert 500 == 200`` with the useful diff only in the
captured logs. :class:`MissLog` collects the cassette errors logged while a test runs; the plugin makes the first
of them the failure of a test that failed, the test's own failure kept below it.
"""

from __future__ import annotations

import logging
import threading


def _cassette_error(error: BaseException | None) -> BaseException | None:
    """``error``, or the exception that caused it, when it is a chatstream CassetteError."""
    from chatstream.exceptions import CassetteError

    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, CassetteError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


class MissLog(logging.Handler):
    """A logging handler (on the root logger while a test runs) keeping the cassette errors logged."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self._lock_errors = threading.Lock()
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        error = _cassette_error(record.exc_info[1] if record.exc_info else None)
        if error is None:
            return
        with self._lock_errors:
            if not any(seen is error for seen in self.errors):
                self.errors.append(error)

    def behind(self, raised: BaseException | None) -> BaseException | None:
        """The first cassette error the app caught, when the test then failed with another one (``raised``)."""
        if not self.errors or raised in self.errors:
            return None
        return self.errors[0]

    def __enter__(self) -> MissLog:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self)


def miss_section(error: BaseException, original: object, count: int) -> tuple[str, str]:
    """The section (title, text) added to the failure report of a test that failed after the app caught
    ``error`` (the first of ``count`` cassette errors): the report shows ``error``, then this, with the test's
    own failure (``original``) last."""
    more = f" ({count} cassette errors in all; this is the first)" if count > 1 else ""
    return (
        "chatstream: where the cassette error went",
        f"The app under test caught this {type(error).__name__}{more} and answered with an error "
        "instead (the captured log shows it too). The test itself then failed with:\n\n" + str(original),
    )
