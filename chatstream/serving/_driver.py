"""Run a blocking iterator (a torch decode loop) from async code: worker-thread hops, stop on cancel.

``drive(make_iterator, limiter)`` is an async generator of batches: each batch holds what one *hop* in
a worker thread produced. A hop calls ``next()`` until a call returns ``_BATCH_SEC`` (2 ms) after the
hop began, or the stop flag is set: a step that takes 2 ms or more (any real model on a real device) is
a hop of its own, faster steps share one so the thread round trip does not dominate. The first hop ends
after its first item: batching never holds back the first token (time to first token). When the consumer
is cancelled or closes the generator (the client left), the stop flag is set at once, the running hop
is awaited (shielded) and the iterator is closed, so no more than the limiter's threads ever run the
model. ``make_iterator(should_stop)`` gets the stop flag's ``is_set`` to pass to the generator.
An exception raised by the iterator is raised here after the items produced before it were yielded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")

_DONE = object()
_BATCH_SEC = 0.002


async def drive(
    make_iterator: Callable[[Callable[[], bool]], Iterator[T]], limiter: anyio.CapacityLimiter | None = None
) -> AsyncIterator[list[T]]:
    stop = threading.Event()
    iterator = iter(make_iterator(stop.is_set))
    busy = threading.Lock()  # held while a worker thread runs the iterator
    budget = [0.0]  # of the running hop: 0 for the first (its first item goes out at once), then _BATCH_SEC

    def hop() -> tuple[list[Any], bool, BaseException | None]:
        items: list[Any] = []
        with busy:
            deadline = time.perf_counter() + budget[0]
            budget[0] = _BATCH_SEC
            try:
                while True:
                    item = next(iterator, _DONE)
                    if item is _DONE:
                        return items, True, None
                    items.append(item)
                    if stop.is_set() or time.perf_counter() >= deadline:
                        return items, False, None
            except Exception as error:  # raised on the event loop, after what came before it
                return items, True, error

    try:
        while True:
            # abandon_on_cancel: a disconnect reaches the `finally` below (which sets the stop flag and
            # then waits for the running hop) without first waiting for the whole hop
            items, ended, error = await anyio.to_thread.run_sync(hop, limiter=limiter, abandon_on_cancel=True)
            if items:
                yield items
            if error is not None:
                raise error
            if ended:
                return
    finally:
        stop.set()
        with anyio.CancelScope(shield=True):
            if not busy.acquire(blocking=False):  # a hop still runs (the wait for it was cancelled)
                await anyio.to_thread.run_sync(busy.acquire)
            try:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
            finally:
                busy.release()
