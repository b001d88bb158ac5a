import asyncio
import random

import pytest

from chatstream.exceptions import ConfigurationError
from chatstream.serving.admission import Admission


def test_capacity_is_exact_for_a_burst():
    admission = Admission(max_running=2, max_waiting=5)
    tickets = [admission.try_enter() for _ in range(200)]
    admitted = [t for t in tickets if t is not None]
    assert len(admitted) == 7
    assert sum(t.granted for t in admitted) == 2
    assert admission.stats() == {"running": 2, "waiting": 5, "max_running": 2, "max_waiting": 5}


@pytest.mark.parametrize(("running", "waiting"), [(0, 1), (1, 0), (-1, 3), (2, True), (1.5, 2)])
def test_bad_limits_are_refused_with_the_argument_named(running, waiting):
    with pytest.raises(ConfigurationError, match=r"num_of_concurrent_executions|max_queue_size"):
        Admission(running, waiting)


async def test_released_slots_go_to_waiters_in_arrival_order():
    admission = Admission(max_running=1, max_waiting=3)
    first = admission.try_enter()
    queued = [admission.try_enter() for _ in range(3)]
    order = []

    async def run(index, ticket):
        await ticket.wait()
        order.append(index)
        await asyncio.sleep(0)
        ticket.release()

    tasks = [asyncio.create_task(run(i, t)) for i, t in enumerate(queued)]
    await asyncio.sleep(0)
    assert order == [] and admission.waiting == 3
    first.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert admission.stats()["running"] == 0 and admission.waiting == 0


async def test_a_newcomer_never_overtakes_a_waiter():
    admission = Admission(max_running=1, max_waiting=1)
    holder = admission.try_enter()
    waiter = admission.try_enter()
    holder.release()  # the slot is handed to the waiter, not freed
    assert waiter.granted
    assert admission.try_enter() is not None  # the queue place is free again...
    assert admission.running == 1  # ...but the running slot is the waiter's


async def test_cancelled_waiter_leaves_the_queue():
    admission = Admission(max_running=1, max_waiting=2)
    holder = admission.try_enter()
    ticket = admission.try_enter()
    task = asyncio.create_task(ticket.wait())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert admission.waiting == 0
    holder.release()
    assert admission.running == 0


async def test_waiter_cancelled_right_after_its_grant_passes_the_slot_on():
    admission = Admission(max_running=1, max_waiting=2)
    holder = admission.try_enter()
    unlucky, next_one = admission.try_enter(), admission.try_enter()
    unlucky_task = asyncio.create_task(unlucky.wait())
    next_task = asyncio.create_task(next_one.wait())
    await asyncio.sleep(0)
    holder.release()  # grants `unlucky`, whose task has not resumed yet...
    unlucky_task.cancel()  # ...and is cancelled before it does
    with pytest.raises(asyncio.CancelledError):
        await unlucky_task
    await asyncio.wait_for(next_task, 1)
    assert next_one.granted and admission.running == 1
    next_one.release()
    assert admission.stats()["running"] == 0


def test_release_is_idempotent():
    admission = Admission(max_running=1, max_waiting=1)
    ticket = admission.try_enter()
    ticket.release()
    ticket.release()
    assert admission.running == 0
    assert admission.try_enter().granted


async def test_random_interleavings_never_exceed_limits_or_leak():
    rng = random.Random(1234)
    admission = Admission(max_running=3, max_waiting=4)
    running = peak = refused = 0

    async def client():
        nonlocal running, peak, refused
        ticket = admission.try_enter()
        if ticket is None:
            refused += 1
            return
        try:
            await ticket.wait()
            running += 1
            try:
                peak = max(peak, running)
                assert admission.running <= 3 and admission.waiting <= 4
                await asyncio.sleep(rng.random() / 500)
            finally:
                running -= 1
        finally:
            ticket.release()

    tasks = []
    for _ in range(300):
        tasks.append(asyncio.create_task(client()))
        if rng.random() < 0.3:
            await asyncio.sleep(rng.random() / 1000)
        if rng.random() < 0.2:
            rng.choice(tasks).cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert peak == 3 and refused > 0
    assert admission.stats() == {"running": 0, "waiting": 0, "max_running": 3, "max_waiting": 4}


async def test_once_runs_the_callback_on_its_first_call_only():
    from chatstream.serving.admission import once

    calls = []

    @once
    async def end(outcome, detail=None):
        calls.append((outcome, detail))

    await end("success", detail=1)
    await end("disconnected")
    assert calls == [("success", 1)]
