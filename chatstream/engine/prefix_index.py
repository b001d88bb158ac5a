"""Which cached token histories share a prompt's leading blocks: the prefix cache's lookup, without a scan.

Token ids are cut into blocks of ``BLOCK_TOKENS``; a history's *chain* is the hash of its first block, then
of that hash with the second block, and so on (the prefix hashing of vLLM's automatic prefix caching), so
two histories have the same j-th chain hash exactly when (hash collisions aside) their first j blocks are
equal. ``BlockIndex`` files each entry under every hash of its chain and under its last one (its *tail*):

- the entries sharing a prompt's most blocks are those under the deepest of the prompt's chain hashes that
  is indexed (walking the chain from the first block until one is not);
- the entries that a longer history covers (their ids are a prefix of it) have their tail on its chain.

Candidates are always checked token by token by the caller, so a collision can only cost a cache hit,
never give a wrong one. Entries shorter than one block have no chain; they are listed apart (``short``)
and the caller scans them, and everything, when a prompt shares no whole block with any entry.
"""

from __future__ import annotations

import numpy as np

BLOCK_TOKENS = 16


def block_chain(ids: np.ndarray) -> list[int]:
    """The chain hashes of ``ids`` (int64): one per whole block of ``BLOCK_TOKENS``."""
    data = ids.tobytes()
    step = BLOCK_TOKENS * ids.itemsize
    chain, digest = [], 0
    for start in range(0, (len(ids) // BLOCK_TOKENS) * step, step):
        digest = hash((digest, data[start : start + step]))
        chain.append(digest)
    return chain


class BlockIndex:
    """Entry keys by the chain hashes of their ids. Not thread-safe: the prefix cache holds its lock."""

    __slots__ = ("_by_block", "_by_tail", "short")

    def __init__(self) -> None:
        self._by_block: dict[int, set[int]] = {}
        self._by_tail: dict[int, set[int]] = {}
        self.short: set[int] = set()  # entries shorter than one block

    def add(self, key: int, chain: list[int]) -> None:
        for digest in chain:
            self._by_block.setdefault(digest, set()).add(key)
        if chain:
            self._by_tail.setdefault(chain[-1], set()).add(key)
        else:
            self.short.add(key)

    def remove(self, key: int, chain: list[int]) -> None:
        for digest in chain:
            _discard(self._by_block, digest, key)
        if chain:
            _discard(self._by_tail, chain[-1], key)
        else:
            self.short.discard(key)

    def sharing(self, chain: list[int]) -> set[int] | None:
        """The entries sharing the most whole blocks with the history of ``chain`` (at least one); None when
        no entry shares its first block."""
        found = None
        for digest in chain:
            keys = self._by_block.get(digest)
            if not keys:
                break
            found = keys
        return found

    def sharing_all(self, chain: list[int]) -> set[int]:
        """The entries whose first ``len(chain)`` blocks are the history's (the ones that may start with all of
        it); empty for a chain of no blocks."""
        return self._by_block.get(chain[-1], set()) if chain else set()

    def prefixes(self, chain: list[int]) -> set[int]:
        """The entries whose whole blocks all lie on ``chain`` (the ones whose ids may be a prefix of the
        history), and every short entry."""
        found = set(self.short)
        for digest in chain:
            found |= self._by_tail.get(digest, set())
        return found


def _discard(table: dict[int, set[int]], digest: int, key: int) -> None:
    keys = table.get(digest)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del table[digest]
