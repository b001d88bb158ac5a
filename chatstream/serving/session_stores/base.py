"""The ``SessionStore`` interface, the stored value's JSON form, and the per-session lease.

A store keeps JSON-able dicts. Stores that several processes share (SQLite, Redis) also give each
session a **revision** (``load_revision`` / ``save_if``: a write succeeds only if nobody wrote since the
read, so two writers never interleave) and a **lease** (``lease``: the cross-process lock of one session,
which a crashed holder cannot keep past ``lease_sec``, renewed while its holder streams).

Stored values are ``{"format": FORMAT_VERSION, "data": {...}}`` JSON text; a value without ``format``
(the bare dict that stores wrote before the field existed) still loads. A value of a newer format is
refused with a message instead of being misread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from abc import ABC, abstractmethod

from ...exceptions import SessionStoreError

FORMAT_VERSION = 1
DEFAULT_LEASE_SEC = 30.0  # how long a crashed replica's lock can outlive it
DEFAULT_DURABLE_IDLE_SEC = 30 * 24 * 3600  # a durable store forgets a session unused this long
LEASE_POLL_SEC = 0.02
LEASE_RETRY_SEC = 0.1  # between two tries to give a lease back while the store fails

logger = logging.getLogger("chatstream")


def encode_value(data: dict) -> str:
    """The stored JSON text of ``data`` (raises TypeError when it is not JSON-able)."""
    return json.dumps({"format": FORMAT_VERSION, "data": data}, ensure_ascii=False)


def decode_value(text: str | bytes) -> dict:
    """The data in a stored JSON text, of this format or an older one."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise SessionStoreError(f"a stored session is not a JSON object ({type(value).__name__}); delete it.")
    if "format" not in value:  # written before the format field existed: the bare data dict
        return value
    if not isinstance(value["format"], int) or value["format"] > FORMAT_VERSION:
        raise SessionStoreError(f"a stored session has format {value['format']!r}, newer than this ChatStream's "
                                f"{FORMAT_VERSION}; upgrade ChatStream on every replica that shares the store.")
    data = value.get("data")
    if not isinstance(data, dict):
        raise SessionStoreError("a stored session has no `data` object; delete it.")
    return data


class Lease(ABC):
    """The cross-process lock of one session: taken by polling, renewed in the background while held."""

    def __init__(self, lease_sec: float) -> None:
        self.lease_sec = lease_sec
        self.token = secrets.token_hex(16)
        self._renewer: asyncio.Task | None = None

    @abstractmethod
    async def _try_take(self) -> bool:
        """Take the lease if nobody holds it (or its holder's time ran out)."""

    @abstractmethod
    async def _renew(self) -> bool:
        """Push this holder's expiry ``lease_sec`` ahead; False when the lease was lost."""

    @abstractmethod
    async def _drop(self) -> None:
        """Give the lease up (only if this holder still has it)."""

    async def acquire(self) -> None:
        while not await self._try_take():
            await asyncio.sleep(LEASE_POLL_SEC)
        self._renewer = asyncio.get_running_loop().create_task(self._keep())

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.lease_sec / 3)
            try:
                if not await self._renew():
                    logger.warning("a session lease ran out while its turn was running; the turn's commit "
                                   "will be refused if another replica wrote the session meanwhile")
                    return
            except SessionStoreError as error:  # the store is down: the commit will fail, the lease expires
                logger.warning("could not renew a session lease: %s", error)

    async def release(self, retry: bool = True) -> None:
        """Give the lease up; ``retry``: while the store fails, try again until the lease would have run out."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lease_sec
        while True:  # a store blip must not leave the session locked for a whole lease: retry until it runs out
            try:
                await self._drop()
                return
            except SessionStoreError:
                if not retry or loop.time() > deadline:
                    raise
                await asyncio.sleep(LEASE_RETRY_SEC)


class SessionStore(ABC):
    """Where session data lives. Values are JSON-able dicts; implementations may be remote.

    Only ``load``, ``save`` and ``delete`` are required. A store without revisions keeps the last write
    (``save_if`` always writes); a store without leases (``lease`` returns None) is locked per process only.
    """

    lease_sec: float = DEFAULT_LEASE_SEC

    @abstractmethod
    async def load(self, session_id: str) -> dict | None:
        """The data saved under ``session_id``, or None when there is none (or it expired)."""

    @abstractmethod
    async def save(self, session_id: str, data: dict) -> None:
        """Keep ``data`` (a JSON-able dict) under ``session_id``."""

    @abstractmethod
    async def delete(self, session_id: str) -> None:
        """Forget ``session_id``."""

    async def opened_by_cookie(self, session_id: str) -> None:  # noqa: B027 - optional hook, no-op by default
        """A client came back with a signed cookie naming ``session_id``: it is an established session.

        Stores that evict may keep established sessions over ones that were never used twice (anonymous
        calls without a cookie each make one), as ``MemorySessionStore`` does.
        """

    async def load_revision(self, session_id: str) -> tuple[dict | None, int]:
        """The data and its revision (0 when absent); a store without revisions always says 0."""
        return await self.load(session_id), 0

    async def save_if(self, session_id: str, data: dict, revision: int) -> bool:
        """Save ``data`` only if the session is still at ``revision``; False (nothing written) otherwise."""
        await self.save(session_id, data)
        return True

    def lease(self, session_id: str) -> Lease | None:
        """The cross-process lock of ``session_id``, or None when the store is used by one process only."""
        return None

    async def check(self) -> None:  # noqa: B027 - optional hook
        """Raise ``SessionStoreUnavailable`` when the store cannot be reached now (for ``/health``)."""

    def describe(self) -> str:
        """What this store is, for logs and ``/health``: never a password."""
        return type(self).__name__

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Close connections (the store may be used again afterwards: it reconnects)."""
