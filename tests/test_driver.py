"""The driver (chatstream.serving._driver): no item waits for a later one, fast items share a hand-over, a
consumer that stops taking stops the iterator, and leaving closes it after the step under way."""

import asyncio
import contextlib
import threading

from chatstream.serving import _driver
from chatstream.serving._driver import drive


async def test_the_first_item_is_not_held_back_and_instant_items_share_hand_overs():
    received_first = threading.Event()

    def items(should_stop):
        yield 0
        assert received_first.wait(10), "the first item was held back until later ones came"
        yield from range(1, 1000)

    batches = []
    async with contextlib.aclosing(drive(items)) as hand_overs:
        async for batch in hand_overs:
            batches.append(batch)
            received_first.set()
    assert batches[0] == [0]
    assert [item for batch in batches for item in batch] == list(range(1000))
    assert len(batches) < 100  # instant items share hand-overs (one per item would be 1000)


async def test_a_consumer_that_stops_taking_stops_the_iterator():
    made = []

    def items(should_stop):
        for number in range(10 * _driver._AHEAD):
            made.append(number)
            yield number

    async with contextlib.aclosing(drive(items)) as hand_overs:
        await hand_overs.__anext__()
        await asyncio.sleep(0.3)  # the consumer takes nothing for a while
        assert len(made) <= _driver._AHEAD + 1


async def test_leaving_stops_the_iterator_after_its_step_and_closes_it_in_the_worker():
    closed_in, stopped = [], []

    def items(should_stop):
        try:
            for number in range(1_000_000):
                if should_stop():
                    stopped.append(number)
                    return
                yield number
        finally:
            closed_in.append(threading.current_thread())

    hand_overs = drive(items)
    await hand_overs.__anext__()
    await hand_overs.aclose()
    assert closed_in and closed_in[0] is not threading.current_thread()  # the event loop never runs the model
    assert not stopped or stopped[0] < 1_000_000


async def test_an_error_is_raised_after_the_items_before_it():
    def items(should_stop):
        yield 1
        yield 2
        raise ValueError("boom")

    received = []
    with contextlib.suppress(ValueError):
        async with contextlib.aclosing(drive(items)) as hand_overs:
            async for batch in hand_overs:
                received += batch
    assert received == [1, 2]
