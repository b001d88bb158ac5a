"""The driver (chatstream.serving._driver): the first item goes out on its own, faster ones share a hop."""

import contextlib

from chatstream.serving._driver import drive


async def test_the_first_item_is_not_held_back_and_instant_items_share_hops():
    batches = []
    async with contextlib.aclosing(drive(lambda should_stop: iter(range(1000)))) as hops:
        async for batch in hops:
            batches.append(batch)
    assert batches[0] == [0]  # the first token is not batched with the next ones (time to first token)
    assert [item for batch in batches for item in batch] == list(range(1000))
    assert len(batches) < 100  # instant items share hops (a thread round trip per item would be 1000)
