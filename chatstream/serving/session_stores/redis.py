"""``RedisSessionStore``: sessions in Redis or Valkey (redis-py), shared by replicas on several machines.

A session is a hash ``{prefix}session:{id}`` with ``value`` (the JSON text, never pickle) and
``revision``; each write sets its expiry (``idle_timeout_sec``). A revision-checked write is one Lua
script, so the check and the write are atomic on the server. The lease is redis-py's ``Lock`` on
``{prefix}lease:{id}`` with a timeout (``lease_sec``), renewed while its holder streams. A refused
connection, a timeout or a server still loading raises ``SessionStoreUnavailable``; redis-py's pool
connects again on the next call. The URL's password is kept out of ``describe()``, logs and errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
import weakref
from typing import Any

from ...exceptions import ConfigurationError, SessionStoreError, SessionStoreUnavailable
from .base import DEFAULT_DURABLE_IDLE_SEC, DEFAULT_LEASE_SEC, Lease, SessionStore, decode_value, encode_value

_SAVE_IF = """
local revision = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0')
if revision ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'value', ARGV[2], 'revision', revision + 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class RedisSessionStore(SessionStore):
    """Sessions in the Redis (or Valkey) server at ``url`` (``redis://[:password@]host:port/db``, ``rediss://``)."""

    def __init__(self, url: str, prefix: str = "chatstream:", idle_timeout_sec: float = DEFAULT_DURABLE_IDLE_SEC,
                 lease_sec: float = DEFAULT_LEASE_SEC, connect_timeout_sec: float = 2.0,
                 command_timeout_sec: float = 5.0) -> None:
        try:
            import redis.asyncio  # noqa: F401 - checked here so a missing redis-py fails at start-up
        except ImportError as error:
            raise ConfigurationError("a redis:// session store needs redis-py: pip install 'chatstream[redis]'."
                                     ) from error
        if urllib.parse.urlsplit(url).scheme not in ("redis", "rediss"):
            raise ConfigurationError(f"the Redis session store URL {redact_url(url)!r} must start with redis:// "
                                     "or rediss://.")
        for name, value in (("idle_timeout_sec", idle_timeout_sec), ("lease_sec", lease_sec),
                            ("connect_timeout_sec", connect_timeout_sec), ("command_timeout_sec", command_timeout_sec)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(f"`{name}` (={value!r}) must be a number of seconds > 0.")
        self._url, self.prefix = url, prefix
        self.idle_timeout_sec, self.lease_sec = idle_timeout_sec, lease_sec
        self._timeouts = (connect_timeout_sec, command_timeout_sec)
        # redis.asyncio connections belong to one event loop: one client per loop
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def client(self) -> Any:
        """The redis.asyncio client of the running event loop."""
        import redis.asyncio

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = redis.asyncio.Redis.from_url(self._url, decode_responses=True,
                                                  socket_connect_timeout=self._timeouts[0],
                                                  socket_timeout=self._timeouts[1])
            client.save_if = client.register_script(_SAVE_IF)
            self._clients[loop] = client
        return client

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}"

    def _ttl(self) -> int:
        return max(1, int(self.idle_timeout_sec))

    async def _call(self, work: Any) -> Any:
        """Await ``work`` (a coroutine of client calls), turning redis-py's failures into ChatStream's errors."""
        import redis.exceptions

        try:
            return await work
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as error:
            raise SessionStoreUnavailable(f"the Redis session store {self.describe()} cannot be reached: "
                                          f"{type(error).__name__}: {error}") from None
        except redis.exceptions.RedisError as error:
            raise SessionStoreError(f"the Redis session store {self.describe()} refused a command: "
                                    f"{type(error).__name__}: {error}") from None

    async def load(self, session_id: str) -> dict | None:
        return (await self.load_revision(session_id))[0]

    async def load_revision(self, session_id: str) -> tuple[dict | None, int]:
        value, revision = await self._call(self.client().hmget(self._key(session_id), "value", "revision"))
        if value is None:
            return None, 0
        return decode_value(value), int(revision or 0)

    async def save(self, session_id: str, data: dict) -> None:
        text, key = encode_value(data), self._key(session_id)

        async def work() -> None:
            async with self.client().pipeline(transaction=True) as pipe:
                pipe.hset(key, "value", text)
                pipe.hincrby(key, "revision", 1)
                pipe.expire(key, self._ttl())
                await pipe.execute()

        await self._call(work())

    async def save_if(self, session_id: str, data: dict, revision: int) -> bool:
        client = self.client()
        done = await self._call(client.save_if(keys=[self._key(session_id)],
                                                args=[revision, encode_value(data), self._ttl()]))
        return bool(done)

    async def delete(self, session_id: str) -> None:
        await self._call(self.client().delete(self._key(session_id)))

    async def opened_by_cookie(self, session_id: str) -> None:
        await self._call(self.client().expire(self._key(session_id), self._ttl()))

    def lease(self, session_id: str) -> Lease:
        return _RedisLease(self, f"{self.prefix}lease:{session_id}")

    async def check(self) -> None:
        await self._call(self.client().ping())

    def describe(self) -> str:
        return redact_url(self._url)

    async def aclose(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


class _RedisLease(Lease):
    """redis-py's Lock with a timeout: a holder that dies loses it after ``lease_sec``."""

    def __init__(self, store: RedisSessionStore, name: str) -> None:
        super().__init__(store.lease_sec)
        self.store = store
        self.lock = store.client().lock(name, timeout=self.lease_sec, blocking=False, thread_local=False)

    async def _try_take(self) -> bool:
        return bool(await self.store._call(self.lock.acquire(blocking=False, token=self.token)))

    async def _renew(self) -> bool:
        import redis.exceptions

        async def work() -> bool:
            try:
                return bool(await self.lock.reacquire())
            except redis.exceptions.LockError:  # it ran out and someone else took it
                return False

        return await self.store._call(work())

    async def _drop(self) -> None:
        import redis.exceptions

        async def work() -> None:
            with contextlib.suppress(redis.exceptions.LockError):  # it ran out and was taken: nothing of ours
                await self.lock.release()

        await self.store._call(work())  # a server that is down raises SessionStoreUnavailable: retried
