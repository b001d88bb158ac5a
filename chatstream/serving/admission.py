"""Exact admission control: a fixed number of running slots and a bounded FIFO wait queue.

    admission = Admission(max_running=2, max_waiting=5)
    ticket = admission.try_enter()      # decided at once: None means "full, answer 429"
    if ticket is None: ...
    await ticket.wait()                 # returns when the ticket holds a running slot
    try: ... finally: ticket.release()  # idempotent; hands the slot to the oldest waiter

``try_enter`` is synchronous, so a burst is counted exactly: there is no await between the check and
the bookkeeping. A released slot goes straight to the oldest waiter (arrival order), never back to a
newcomer. ``wait`` is cancellation-safe: a waiter cancelled while queued leaves the queue, and one
cancelled just after being granted passes its slot on, so no path leaks a slot. All methods must be
called from the event loop's thread.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ..exceptions import ConfigurationError

_WAITING, _GRANTED, _DONE = "waiting", "granted", "done"


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"`{name}` (={value!r}) must be an integer >= 1.")
    return value


class Ticket:
    """One request's place: waiting, then granted (holding a running slot), then done."""

    __slots__ = ("_admission", "_future", "state")

    def __init__(self, admission: Admission, state: str) -> None:
        self._admission = admission
        self._future: asyncio.Future[None] | None = None
        self.state = state

    @property
    def granted(self) -> bool:
        return self.state == _GRANTED

    def _grant(self) -> None:
        self.state = _GRANTED
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    async def wait(self) -> None:
        """Return once this ticket holds a running slot (at once when it already does)."""
        if self.state == _GRANTED:
            return
        if self.state == _DONE:
            raise RuntimeError("this ticket was already released")
        self._future = asyncio.get_running_loop().create_future()
        try:
            await self._future
        except asyncio.CancelledError:
            self.release()  # leaves the queue, or passes on a slot granted at the last moment
            raise

    def release(self) -> None:
        """Give the place back: a running slot goes to the oldest waiter; a queued place is dropped."""
        if self.state == _GRANTED:
            self.state = _DONE
            self._admission._hand_over()
        elif self.state == _WAITING:
            self.state = _DONE
            self._admission._waiters.remove(self)


class Admission:
    """At most ``max_running`` tickets granted at once and at most ``max_waiting`` queued behind them."""

    def __init__(self, max_running: int, max_waiting: int) -> None:
        self.max_running = _check_count("num_of_concurrent_executions", max_running)
        self.max_waiting = _check_count("max_queue_size", max_waiting)
        self._running = 0
        self._waiters: deque[Ticket] = deque()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_enter(self) -> Ticket | None:
        """A granted ticket when a slot is free, a queued one when the queue has room, else None."""
        if self._running < self.max_running and not self._waiters:
            self._running += 1
            return Ticket(self, _GRANTED)
        if len(self._waiters) < self.max_waiting:
            ticket = Ticket(self, _WAITING)
            self._waiters.append(ticket)
            return ticket
        return None

    def _hand_over(self) -> None:
        if self._waiters:
            self._waiters.popleft()._grant()  # the slot changes hands; the running count stays
        else:
            self._running -= 1

    def stats(self) -> dict[str, int]:
        return {
            "running": self._running,
            "waiting": len(self._waiters),
            "max_running": self.max_running,
            "max_waiting": self.max_waiting,
        }


def once(callback: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """``callback`` run on its first call only: a request ends (its slot released, its outcome recorded)
    exactly once, however many of its paths (close callback, stream end, error) report the end."""
    done = False

    async def first_call_only(*args: Any, **kwargs: Any) -> None:
        nonlocal done
        if not done:
            done = True
            await callback(*args, **kwargs)

    return first_call_only

