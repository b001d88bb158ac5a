"""``MemorySessionStore``: sessions in this process's memory, as JSON text, bounded and expiring."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from ...exceptions import ConfigurationError
from .base import SessionStore, decode_value, encode_value


class MemorySessionStore(SessionStore):
    """The default store of ``ChatStream(...)``: in this process's memory, bounded and expiring.

    Sessions whose cookie never came back (every cookieless call makes one) are evicted first, least
    recently used first; established sessions (``opened_by_cookie``) go only when no other is left, so
    a flood of anonymous calls cannot wipe the users' histories and roles.
    """

    def __init__(
        self,
        max_sessions: int = 10_000,
        idle_timeout_sec: float = 24 * 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            raise ConfigurationError(f"`max_sessions` (={max_sessions!r}) must be an integer >= 1.")
        if not isinstance(idle_timeout_sec, (int, float)) or idle_timeout_sec <= 0:
            raise ConfigurationError(f"`idle_timeout_sec` (={idle_timeout_sec!r}) must be a number > 0.")
        self.max_sessions = max_sessions
        self.idle_timeout_sec = idle_timeout_sec
        self._clock = clock
        # session id -> (last use, stored JSON text, revision)
        self._entries: OrderedDict[str, tuple[float, str, int]] = OrderedDict()  # established sessions
        self._new: OrderedDict[str, tuple[float, str, int]] = OrderedDict()  # never opened by cookie yet

    def __len__(self) -> int:
        return len(self._entries) + len(self._new)

    def _table(self, session_id: str) -> OrderedDict[str, tuple[float, str, int]] | None:
        if session_id in self._entries:
            return self._entries
        return self._new if session_id in self._new else None

    def _entry(self, session_id: str) -> tuple[float, str, int] | None:
        table = self._table(session_id)
        if table is None:
            return None
        entry = table[session_id]
        if self._clock() - entry[0] > self.idle_timeout_sec:
            del table[session_id]
            return None
        table.move_to_end(session_id)
        return entry

    async def load(self, session_id: str) -> dict | None:
        return (await self.load_revision(session_id))[0]

    async def load_revision(self, session_id: str) -> tuple[dict | None, int]:
        entry = self._entry(session_id)
        return (None, 0) if entry is None else (decode_value(entry[1]), entry[2])

    async def save(self, session_id: str, data: dict) -> None:
        entry = self._entry(session_id)
        self._put(session_id, data, entry[2] if entry is not None else 0)

    async def save_if(self, session_id: str, data: dict, revision: int) -> bool:
        entry = self._entry(session_id)
        if (entry[2] if entry is not None else 0) != revision:
            return False
        self._put(session_id, data, revision)
        return True

    def _put(self, session_id: str, data: dict, revision: int) -> None:
        text = encode_value(data)  # also proves the data is JSON-able
        table = self._table(session_id)
        if table is None:
            table = self._new
        table[session_id] = (self._clock(), text, revision + 1)
        table.move_to_end(session_id)
        while len(self) > self.max_sessions:
            (self._new or self._entries).popitem(last=False)

    async def delete(self, session_id: str) -> None:
        self._entries.pop(session_id, None)
        self._new.pop(session_id, None)

    async def opened_by_cookie(self, session_id: str) -> None:
        entry = self._new.pop(session_id, None)
        if entry is not None:
            self._entries[session_id] = entry

    def describe(self) -> str:
        return "memory"
