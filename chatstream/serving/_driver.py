"""Run a blocking iterator (a torch decode loop) from async code: one worker thread, batched hand-over.

``drive(make_iterator, limiter)`` is an async generator of batches. One worker thread (taken from
``limiter`` for the whole generation) runs the iterator and appends each item to a buffer; the consumer
takes everything buffered at once. The thread wakes the consumer (``call_soon_threadsafe``) only when
it is waiting for an item, so a step slower than the consumer (any real model) is handed over as soon
as it is made, one item per batch, and faster steps pile up while the consumer sends the previous
batch: no item waits for a later one (time to first token), and a hand-over costs one loop wake-up
instead of a thread round trip per step. The thread runs at most ``_AHEAD`` items ahead of the
consumer, so a client that stops reading also stops the model.

When the consumer is cancelled or closes the generator (the client left), the stop flag is set at once
and the thread is awaited (shielded): it stops after the step it is in and closes the iterator, so no
more than the limiter's threads ever run the model. ``make_iterator(should_stop)`` gets the stop flag's
``is_set`` to pass to the generator. An exception raised by the iterator is raised here after the items
produced before it were yielded.

``prepare`` (blocking work to do before the iterator, e.g. the prompt check) runs first in the same worker
thread, so it costs no thread round trip of its own: its exception is raised at the first batch, and when
it passes the first batch is empty (``[]``), so the caller can answer before any item is made.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")

_AHEAD = 256  # items the thread may buffer before it waits for the consumer to take them


class _Buffer:
    """What the worker thread hands over: items (appended by ``drive``'s thread loop), the end, the error;
    guarded by one lock. ``room`` is cleared while the thread must wait for the consumer to take the items:
    after the first item, and when ``_AHEAD`` are buffered."""

    __slots__ = ("announced", "ended", "error", "items", "lock", "loop", "room", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.items: list[Any] = []
        self.ended = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None  # set while the consumer waits for the thread
        self.room = threading.Event()  # set when the thread may go on; the consumer sets it when it takes items
        self.room.set()
        self.announced = False  # ``prepare`` passed and the consumer has not heard it yet

    def announce(self) -> None:
        """From the thread: ``prepare`` passed; wakes the consumer (its next batch is empty, whatever is buffered)."""
        with self.lock:
            self.announced = True
            waiter, self.waiter = self.waiter, None
        if waiter is not None:
            self.loop.call_soon_threadsafe(_wake, waiter)

    def end(self, error: BaseException | None) -> None:
        """From the thread: the iterator ended (``error``: what it raised); wakes the consumer."""
        with self.lock:
            self.ended, self.error = True, error
            waiter, self.waiter = self.waiter, None
        if waiter is not None:
            self.loop.call_soon_threadsafe(_wake, waiter)

    def take(self) -> tuple[list[Any], bool, asyncio.Future | None]:
        """From the event loop: (the buffered items, whether the thread ended, a future to await when neither)."""
        with self.lock:
            if self.announced:  # an empty batch of its own: the items made since come with the next one
                self.announced = False
                return [], False, None
            items, self.items = self.items, []
            if items or self.ended:
                if not self.room.is_set():
                    self.room.set()
                return items, self.ended, None
            self.waiter = self.loop.create_future()
            return items, False, self.waiter


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def drive(
    make_iterator: Callable[[Callable[[], bool]], Iterator[T]], limiter: anyio.CapacityLimiter | None = None,
    prepare: Callable[[], None] | None = None,
) -> AsyncIterator[list[T]]:
    stop = threading.Event()
    iterator = iter(make_iterator(stop.is_set))
    buffer = _Buffer(asyncio.get_running_loop())

    def produce() -> None:
        error: BaseException | None = None
        lock, room, wake = buffer.lock, buffer.room, buffer.loop.call_soon_threadsafe
        try:
            # the first item is taken before the next is made: a fast pure-Python iterator would otherwise keep
            # the GIL from the event loop that sends it (time to first token)
            room.clear()
            if prepare is not None:
                prepare()
                buffer.announce()
            for item in iterator:
                with lock:  # the hand-over, inline (per item): buffer it, wake the consumer when it waits
                    items = buffer.items
                    items.append(item)
                    if len(items) >= _AHEAD:
                        room.clear()
                    waiter, buffer.waiter = buffer.waiter, None
                if waiter is not None:
                    wake(_wake, waiter)
                if stop.is_set():
                    break
                if not room.is_set():
                    room.wait()  # until the consumer takes the buffer (or leaves: then the stop flag is set)
                    if stop.is_set():
                        break
        except Exception as raised:  # raised on the event loop, after what came before it
            error = raised
        finally:
            try:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
            finally:
                buffer.end(error)

    worker = asyncio.ensure_future(anyio.to_thread.run_sync(produce, limiter=limiter))
    try:
        while True:
            items, ended, waiter = buffer.take()
            if waiter is not None:
                await waiter
                continue
            if items or not ended:  # an empty batch: ``prepare`` passed
                yield items
            if ended:
                if buffer.error is not None:
                    raise buffer.error
                return
    finally:
        stop.set()
        buffer.room.set()
        with anyio.CancelScope(shield=True):
            await worker  # the step under way ends and the iterator is closed in the thread
