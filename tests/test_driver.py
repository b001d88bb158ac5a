"""The driver (chatstream.serving._driver): no item waits for a later one, fast items share a hand-over, a
consumer that stops taking stops the iterator, and leaving closes it after the step under way."""

import asyncio
import contextlib
import threading

import pytest

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


@pytest.mark.parametrize("inline", [False, True], ids=["thread", "inline"])
async def test_an_error_is_raised_after_the_items_before_it(inline):
    def items(should_stop):
        yield 1
        yield 2
        raise ValueError("boom")

    received = []
    with pytest.raises(ValueError, match="boom"):
        async with contextlib.aclosing(drive(items, inline=inline)) as hand_overs:
            async for batch in hand_overs:
                received += batch
    assert received == [1, 2]


# -- inline: an iterator that never blocks runs on the event loop -------------------------------------------


async def test_inline_runs_on_the_loop_first_item_alone_then_in_batches():
    loop_thread = threading.get_ident()
    threads = set()

    def items(should_stop):
        for number in range(100):
            threads.add(threading.get_ident())
            yield number

    async with contextlib.aclosing(drive(items, inline=True)) as hand_overs:
        batches = [batch async for batch in hand_overs]
    assert threads == {loop_thread}  # no worker thread
    assert batches[0] == [0]
    assert [item for batch in batches for item in batch] == list(range(100))
    assert all(len(batch) <= _driver.INLINE_BATCH for batch in batches)


async def test_inline_batch_sets_the_size_of_the_batches_after_the_first():
    def items(should_stop):
        yield from range(12)

    async with contextlib.aclosing(drive(items, inline=True, inline_batch=5)) as hand_overs:
        batches = [batch async for batch in hand_overs]
    assert batches == [[0], [1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11]]


async def test_inline_lets_other_tasks_run_between_batches():
    ticks = []

    async def ticker():
        while True:
            ticks.append(len(made))
            await asyncio.sleep(0)

    made = []

    def items(should_stop):
        for number in range(10 * _driver.INLINE_BATCH):
            made.append(number)
            yield number

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    async with contextlib.aclosing(drive(items, inline=True)) as hand_overs:
        async for _ in hand_overs:
            pass
    task.cancel()
    assert len({tick for tick in ticks if 0 < tick < len(made)}) >= 5  # it ran while the items were made


async def test_inline_leaving_sets_the_stop_flag_and_closes_the_iterator():
    closed, flags = [], []

    def items(should_stop):
        flags.append(should_stop)
        try:
            yield from range(1000)
        finally:
            closed.append(True)

    async with contextlib.aclosing(drive(items, inline=True)) as hand_overs:
        await hand_overs.__anext__()
    assert closed == [True]
    assert flags[0]() is True


async def test_inline_prepare_runs_first_and_its_error_comes_at_the_first_batch():
    order = []

    def items(should_stop):
        order.append("iterate")
        yield 1

    async with contextlib.aclosing(drive(items, prepare=lambda: order.append("prepare"), inline=True)) as batches:
        assert await batches.__anext__() == []
        assert [batch async for batch in batches] == [[1]]
    assert order == ["prepare", "iterate"]

    def refuse():
        raise RuntimeError("too long")

    failing = drive(items, prepare=refuse, inline=True)
    try:
        await failing.__anext__()
    except RuntimeError as error:
        assert str(error) == "too long"
    else:
        raise AssertionError("prepare's error was not raised")
    finally:
        await failing.aclose()


def test_only_a_generator_that_never_waits_runs_inline():
    from chatstream.engine.mock_generator import ChatGeneratorMock

    assert _driver.runs_inline(ChatGeneratorMock(params={"type": "long"})) is True
    assert _driver.runs_inline(ChatGeneratorMock(params={"type": "long", "time_per_token_sec": 0.01})) is False
    assert _driver.runs_inline(ChatGeneratorMock(params={"initial_wait_sec": 0.5})) is False
    assert _driver.runs_inline(object()) is False  # a model's generator: a worker thread


@pytest.mark.parametrize("waits", [False, True])
async def test_a_prompt_check_for_a_generator_that_never_waits_runs_on_the_loop(waits):
    """``call_for``: no thread hop per request for the mock; a model's (or a waiting mock's) check in a worker."""
    from chatstream.engine.mock_generator import ChatGeneratorMock

    generator = ChatGeneratorMock(params={"type": "long", **({"initial_wait_sec": 0.01} if waits else {})})
    loop_thread = threading.get_ident()

    def check(value: int) -> tuple[int, int]:
        return threading.get_ident(), value * 2

    ran_on, value = await _driver.call_for(generator, check, 21)
    assert value == 42 and (ran_on != loop_thread) is waits


async def test_a_prompt_checks_error_reaches_the_caller_either_way():
    from chatstream.engine.mock_generator import ChatGeneratorMock

    def check() -> None:
        raise ValueError("does not fit")

    for generator in (ChatGeneratorMock(), object()):
        with pytest.raises(ValueError, match="does not fit"):
            await _driver.call_for(generator, check)
