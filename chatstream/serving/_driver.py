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

``inline=True`` is for an iterator that never blocks (``runs_inline(generator)``: the generator mock without
waits): it is run on the event loop itself, the first item alone, then ``inline_batch`` items a batch with
a pass through the loop between batches, so it costs no thread and no hand-over and holds the loop no
longer than a batch takes. Same contract: ``prepare`` first (then ``[]``), an error after the items made
before it, the iterator closed (and its stop flag set) when the consumer leaves.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from itertools import islice
from typing import Any, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")

_AHEAD = 256  # items the thread may buffer before it waits for the consumer to take them
# Items an inline iterator makes before the loop runs other work. Where a batch becomes one write (the OpenAI
# stream) it is small, as the next request's first token waits for it; where each item is a write of its own
# (the 0.3 stream) a batch only sets how often the loop runs other work, and a pass costs more than the items.
INLINE_BATCH = 16
INLINE_BATCH_ITEMWISE = 64


def runs_inline(generator: Any) -> bool:
    """Whether ``generator`` declares that its iterators never block (``runs_inline`` true): no model, no sleep."""
    return getattr(generator, "runs_inline", False) is True


async def call_for(generator: Any, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)``, work done for ``generator`` (checking a prompt against it): in a worker thread, as
    it may tokenize a long history, but on the loop for a generator that never blocks, whose checks do not
    either (a thread hop per request is then all the call would cost)."""
    if runs_inline(generator):
        return function(*args)
    return await anyio.to_thread.run_sync(function, *args)


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


def drive(
    make_iterator: Callable[[Callable[[], bool]], Iterator[T]], limiter: anyio.CapacityLimiter | None = None,
    prepare: Callable[[], None] | None = None, inline: bool = False, inline_batch: int = INLINE_BATCH,
) -> AsyncIterator[list[T]]:
    """The batches of ``make_iterator(should_stop)``'s items (see the module's docstring); ``inline_batch``: the
    batch of an inline iterator after its first item."""
    if inline:
        return _drive_inline(make_iterator, prepare, inline_batch)
    return _drive_in_thread(make_iterator, limiter, prepare)


async def _drive_in_thread(
    make_iterator: Callable[[Callable[[], bool]], Iterator[T]], limiter: anyio.CapacityLimiter | None,
    prepare: Callable[[], None] | None,
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
                _close(iterator)
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


async def _drive_inline(
    make_iterator: Callable[[Callable[[], bool]], Iterator[T]], prepare: Callable[[], None] | None, batch_size: int,
) -> AsyncIterator[list[T]]:
    stop = threading.Event()
    iterator = iter(make_iterator(stop.is_set))
    try:
        if prepare is not None:
            prepare()
            yield []
        size = 1  # the first item alone: it is sent before the next is made (time to first token)
        while True:
            batch: list[T] = []
            error: BaseException | None = None
            try:
                batch.extend(islice(iterator, size))  # keeps what came before an error
            except Exception as raised:  # raised after the items made before it
                error = raised
            ended = error is None and len(batch) < size
            if batch:
                yield batch
            if error is not None:
                raise error
            if ended:
                return
            await asyncio.sleep(0)  # other requests' work runs between batches
            size = batch_size
    finally:
        stop.set()
        _close(iterator)


def _close(iterator: Iterator) -> None:
    """Close a generator (a plain iterator has nothing to close)."""
    close = getattr(iterator, "close", None)
    if close is not None:
        close()
