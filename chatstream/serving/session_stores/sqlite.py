"""``SqliteSessionStore``: sessions in a SQLite file (standard library ``sqlite3``, WAL), durable across
restarts and shared by the processes of one machine.

Each call runs in a worker thread on one connection (serialised by a thread lock); several processes
may open the same file (WAL lets readers and one writer work at once; a busy file is waited for up to
``busy_timeout_sec``). A failing file (locked too long, disk full, removed directory) raises
``SessionStoreUnavailable`` and the connection is reopened on the next call. The lease of a session is
a row of the ``leases`` table with its holder's token and wall-clock expiry.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from ...exceptions import ConfigurationError, SessionStoreUnavailable
from .base import DEFAULT_DURABLE_IDLE_SEC, DEFAULT_LEASE_SEC, Lease, SessionStore, decode_value, encode_value

T = TypeVar("T")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, value TEXT NOT NULL, revision INTEGER NOT NULL, "
    "used REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS sessions_used ON sessions (used)",
    "CREATE TABLE IF NOT EXISTS leases (id TEXT PRIMARY KEY, token TEXT NOT NULL, expires REAL NOT NULL)",
)
_PURGE_EVERY = 500  # saves between two deletions of expired sessions


class SqliteSessionStore(SessionStore):
    """Sessions in the SQLite file ``path`` (created with its directory), forgotten after ``idle_timeout_sec``."""

    def __init__(self, path: str | Path, idle_timeout_sec: float = DEFAULT_DURABLE_IDLE_SEC,
                 lease_sec: float = DEFAULT_LEASE_SEC, busy_timeout_sec: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        for name, value in (("idle_timeout_sec", idle_timeout_sec), ("lease_sec", lease_sec),
                            ("busy_timeout_sec", busy_timeout_sec)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(f"`{name}` (={value!r}) must be a number of seconds > 0.")
        self.path = Path(path).expanduser()
        self.idle_timeout_sec, self.lease_sec, self.busy_timeout_sec = idle_timeout_sec, lease_sec, busy_timeout_sec
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._saves = 0

    # -- the connection ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_sec, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        return conn

    def _run_sync(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                return work(self._conn)
            except (sqlite3.Error, OSError) as error:
                if self._conn is not None:
                    self._conn.close()  # rolls back an open transaction
                    self._conn = None  # reopened on the next call
                raise SessionStoreUnavailable(f"the SQLite session store {self.path} failed: {error}; "
                                              "check the file, its directory and the free disk space.") from error

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await anyio.to_thread.run_sync(self._run_sync, work)

    # -- the store ----------------------------------------------------------------------------------

    def _read(self, conn: sqlite3.Connection, session_id: str) -> tuple[str, int] | None:
        row = conn.execute("SELECT value, revision, used FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            return None
        if self._clock() - row[2] > self.idle_timeout_sec:
            conn.execute("DELETE FROM sessions WHERE id = ? AND revision = ?", (session_id, row[1]))
            return None
        return row[0], row[1]

    async def load(self, session_id: str) -> dict | None:
        return (await self.load_revision(session_id))[0]

    async def load_revision(self, session_id: str) -> tuple[dict | None, int]:
        row = await self._run(lambda conn: self._read(conn, session_id))
        return (None, 0) if row is None else (decode_value(row[0]), row[1])

    async def save(self, session_id: str, data: dict) -> None:
        text = encode_value(data)

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO sessions (id, value, revision, used) VALUES (?, ?, 1, ?) ON CONFLICT (id) "
                         "DO UPDATE SET value = excluded.value, revision = sessions.revision + 1, used = excluded.used",
                         (session_id, text, self._clock()))
            self._purge_now_and_then(conn)

        await self._run(work)

    async def save_if(self, session_id: str, data: dict, revision: int) -> bool:
        text = encode_value(data)

        def work(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")  # the write lock: no other process writes between check and write
            try:
                row = self._read(conn, session_id)
                if (row[1] if row is not None else 0) != revision:
                    conn.execute("ROLLBACK")
                    return False
                conn.execute("INSERT OR REPLACE INTO sessions (id, value, revision, used) VALUES (?, ?, ?, ?)",
                             (session_id, text, revision + 1, self._clock()))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._purge_now_and_then(conn)
            return True

        return await self._run(work)

    def _purge_now_and_then(self, conn: sqlite3.Connection) -> None:
        self._saves += 1
        if self._saves % _PURGE_EVERY == 0:
            now = self._clock()
            conn.execute("DELETE FROM sessions WHERE used < ?", (now - self.idle_timeout_sec,))
            conn.execute("DELETE FROM leases WHERE expires < ?", (now,))

    async def delete(self, session_id: str) -> None:
        await self._run(lambda conn: conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,)))

    def lease(self, session_id: str) -> Lease:
        return _SqliteLease(self, session_id)

    async def check(self) -> None:
        def work(conn: sqlite3.Connection) -> None:  # can this process write (a locked file cannot)?
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")

        await self._run(work)

    def describe(self) -> str:
        return f"sqlite://{self.path}"

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await anyio.to_thread.run_sync(close)


class _SqliteLease(Lease):
    def __init__(self, store: SqliteSessionStore, session_id: str) -> None:
        super().__init__(store.lease_sec)
        self.store, self.session_id = store, session_id

    def _expiry(self) -> float:
        return self.store._clock() + self.lease_sec

    async def _try_take(self) -> bool:
        def work(conn: sqlite3.Connection) -> Any:
            return conn.execute(
                "INSERT INTO leases (id, token, expires) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "token = excluded.token, expires = excluded.expires WHERE leases.expires < ?",
                (self.session_id, self.token, self._expiry(), self.store._clock())).rowcount == 1

        return await self.store._run(work)

    async def _renew(self) -> bool:
        return await self.store._run(lambda conn: conn.execute(
            "UPDATE leases SET expires = ? WHERE id = ? AND token = ?",
            (self._expiry(), self.session_id, self.token)).rowcount == 1)

    async def _drop(self) -> None:
        await self.store._run(lambda conn: conn.execute(
            "DELETE FROM leases WHERE id = ? AND token = ?", (self.session_id, self.token)))
