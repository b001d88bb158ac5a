"""The block index finds what a scan of every entry would, for any set of histories."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from chatstream.engine.prefix_cache import _common_prefix
from chatstream.engine.prefix_index import BLOCK_TOKENS, BlockIndex, block_chain

STEM = np.arange(5 * BLOCK_TOKENS, dtype=np.int64)  # what histories share: a cut of it, then their own tokens
tails = st.lists(st.integers(0, 2), max_size=2 * BLOCK_TOKENS).map(lambda tokens: np.asarray(tokens, dtype=np.int64))
shared_then_own = st.tuples(st.integers(0, len(STEM)), tails).map(lambda cut: np.concatenate([STEM[: cut[0]], cut[1]]))


def indexed(entries: list[np.ndarray]) -> BlockIndex:
    index = BlockIndex()
    for key, ids in enumerate(entries):
        index.add(key, block_chain(ids))
    return index


def test_the_chain_has_one_hash_per_whole_block_and_follows_the_ids() -> None:
    ids = np.arange(3 * BLOCK_TOKENS + 5, dtype=np.int64)
    other = ids.copy()
    other[BLOCK_TOKENS + 2] = -1  # differs in the second block
    assert len(block_chain(ids)) == 3
    assert block_chain(ids)[0] == block_chain(other)[0]
    assert block_chain(ids)[1:] != block_chain(other)[1:]
    assert block_chain(ids[: BLOCK_TOKENS - 1]) == []


@given(st.lists(shared_then_own, max_size=8), shared_then_own)
def test_sharing_holds_an_entry_with_the_longest_common_prefix(entries: list[np.ndarray], prompt: np.ndarray) -> None:
    index = indexed(entries)
    best = max((_common_prefix(ids, prompt) for ids in entries), default=0)
    found = index.sharing(block_chain(prompt))
    if best < BLOCK_TOKENS:
        assert found is None
    else:
        assert found is not None
        assert max(_common_prefix(entries[key], prompt) for key in found) == best
        # and only entries sharing as many whole blocks: the caller compares few ids, not every entry's
        assert all(_common_prefix(entries[key], prompt) // BLOCK_TOKENS == best // BLOCK_TOKENS for key in found)


@given(st.lists(shared_then_own, max_size=8), shared_then_own)
def test_prefixes_and_sharing_all_miss_no_entry(entries: list[np.ndarray], held: np.ndarray) -> None:
    index = indexed(entries)
    chain = block_chain(held)
    prefixes_of_held = {key for key, ids in enumerate(entries) if _common_prefix(ids, held) == len(ids)}
    assert prefixes_of_held <= index.prefixes(chain)
    if chain:
        starting_with_held = {key for key, ids in enumerate(entries) if _common_prefix(ids, held) == len(held)}
        assert starting_with_held <= index.sharing_all(chain)


@given(st.lists(shared_then_own, min_size=1, max_size=8), st.data())
def test_a_removed_entry_is_never_found_again(entries: list[np.ndarray], data: st.DataObject) -> None:
    index = indexed(entries)
    gone = data.draw(st.integers(0, len(entries) - 1))
    index.remove(gone, block_chain(entries[gone]))
    for ids in entries:
        chain = block_chain(ids)
        assert gone not in (index.sharing(chain) or set())
        assert gone not in index.prefixes(chain)
        assert gone not in index.sharing_all(chain)
    index.add(gone, block_chain(entries[gone]))
    assert gone in (index.sharing(block_chain(entries[gone])) or set()) or len(entries[gone]) < BLOCK_TOKENS
