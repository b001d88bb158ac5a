"""The start-up heap freeze (chatstream.serving.startup_heap): garbage is collected before the freeze, what was
alive is frozen while a ChatStream serves, later objects are collected as usual, and the last stop undoes it."""

import gc
import weakref

import pytest

from chatstream import ChatStream
from chatstream.serving import startup_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def clean_heap(monkeypatch):
    """Each test starts with no holder and nothing frozen, and leaves the heap as it found it."""
    frozen_before = gc.get_freeze_count()
    gc.unfreeze()
    monkeypatch.setattr(startup_heap, "_holders", 0)
    monkeypatch.setattr(startup_heap, "_frozen", 0)
    monkeypatch.setattr(startup_heap, "_collected", False)
    yield
    gc.unfreeze()
    if frozen_before:
        gc.freeze()


def test_garbage_is_collected_before_the_freeze_and_the_living_are_frozen():
    garbage, alive = Node(), Node()
    dead = weakref.ref(garbage)
    del garbage
    startup_heap.hold()
    assert dead() is None, "garbage present at the start was frozen instead of collected"
    assert gc.get_freeze_count() > 0
    assert alive not in gc.get_objects(2)  # frozen objects are in no generation: collections skip them
    startup_heap.release()
    assert gc.get_freeze_count() == 0


def test_only_the_first_freeze_of_the_process_collects_and_garbage_frozen_later_goes_at_the_stop():
    startup_heap.hold()
    startup_heap.release()
    garbage = Node()
    dead = weakref.ref(garbage)
    del garbage
    startup_heap.hold()  # a second start (the next test of a suite): no full collection, the garbage is frozen
    gc.collect()
    assert dead() is not None
    startup_heap.release()
    gc.collect()
    assert dead() is None, "garbage frozen at a start was kept after the stop"


def test_objects_made_while_serving_are_collected_as_usual():
    startup_heap.hold()
    try:
        later = Node()
        dead = weakref.ref(later)
        del later
        gc.collect()
        assert dead() is None
    finally:
        startup_heap.release()


def test_one_freeze_is_shared_and_the_last_release_undoes_it():
    startup_heap.hold()
    frozen = gc.get_freeze_count()
    startup_heap.hold()
    assert startup_heap.holders() == 2
    assert gc.get_freeze_count() == frozen  # the second holder neither collects nor freezes again
    startup_heap.release()
    assert gc.get_freeze_count() == frozen
    startup_heap.release()
    assert (startup_heap.holders(), gc.get_freeze_count()) == (0, 0)
    startup_heap.release()  # one release too many is ignored
    assert startup_heap.holders() == 0


def test_a_freeze_made_by_someone_else_is_left_in_place():
    gc.freeze()  # e.g. a pre-fork server froze its heap before the workers started
    startup_heap.hold()
    startup_heap.release()
    assert gc.get_freeze_count() > 0


def test_over_a_freeze_made_before_nothing_more_is_frozen():
    gc.freeze()  # e.g. a conftest's or a pre-fork server's
    frozen = gc.get_freeze_count()
    garbage = Node()
    dead = weakref.ref(garbage)
    del garbage
    startup_heap.hold()
    assert gc.get_freeze_count() == frozen
    startup_heap.release()
    gc.collect()
    assert dead() is None, "garbage made after someone else's freeze was frozen by a start"


def test_a_freeze_made_while_serving_is_not_undone_by_the_stop():
    startup_heap.hold()
    warmed_up = [Node() for _ in range(100)]  # what the app made since the start
    gc.freeze()  # e.g. the app's own freeze after its warm-up
    startup_heap.release()
    assert gc.get_freeze_count() > 0 and warmed_up


def test_a_disabled_collector_is_left_alone():
    gc.disable()
    try:
        startup_heap.hold()
        assert gc.get_freeze_count() == 0
        startup_heap.release()
    finally:
        gc.enable()


async def test_a_chat_stream_holds_the_freeze_from_start_to_stop():
    chat_stream = ChatStream(use_mock_response=True)
    async with chat_stream.lifespan():
        assert startup_heap.holders() == 1 and gc.get_freeze_count() > 0
        await chat_stream.start_queue_worker()  # started twice: still one hold
        assert startup_heap.holders() == 1
    assert (startup_heap.holders(), gc.get_freeze_count()) == (0, 0)


async def test_the_0_3_queue_worker_holds_it_until_cancelled():
    import asyncio

    chat_stream = ChatStream(use_mock_response=True)
    worker = asyncio.create_task(chat_stream.queue_worker())
    await asyncio.sleep(0)
    assert startup_heap.holders() == 1
    worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await worker
    assert (startup_heap.holders(), gc.get_freeze_count()) == (0, 0)
