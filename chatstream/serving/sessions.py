"""Server-side sessions: a replaceable store, a signed cookie that carries only the session id.

``SessionStore`` is the interface an application replaces (a database, Redis...); it keeps plain JSON
dicts. ``MemorySessionStore`` is the default: bounded (least recently used sessions go first) and
idle sessions expire. ``SessionManager`` signs the session id into an ``HttpOnly``, ``SameSite=Lax``
cookie with itsdangerous, using the secret the application passes; without one it uses a random
per-process secret and logs a warning once. ``lock(session_id)`` gives the one lock per session that
keeps two requests of one session from interleaving their history (per process).

When the app brings its own session middleware, as ChatStream 0.3 apps do (``fastsession``'s
``FastSessionMiddleware`` sets ``request.state.session``, an object with ``get_session()``), ChatStream
uses that session instead (``AppSession``): it sets no cookie of its own and keeps the chat prompt in
the app's session dict as a live object, as 0.3 did, so ``get_session()["chat_prompt"]`` is the prompt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from itsdangerous import BadSignature, TimestampSigner
from starlette.requests import Request
from starlette.responses import Response

from ..engine.chat_prompt import AbstractChatPrompt
from ..exceptions import ConfigurationError

SESSION_COOKIE_NAME = "chatstream_session"
PROMPT_KEY = "__chatstream_prompt__"
_STATE_ATTR = "chatstream_session"
_process_secret: str | None = None


def process_secret() -> str:
    """A random secret made once per process (never a fixed string)."""
    global _process_secret
    if _process_secret is None:
        _process_secret = secrets.token_urlsafe(32)
    return _process_secret


class SessionStore(ABC):
    """Where session data lives. Values are JSON-able dicts; implementations may be remote."""

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


class MemorySessionStore(SessionStore):
    """The default store: in this process's memory, as JSON text, bounded and expiring.

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
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()  # established sessions
        self._new: OrderedDict[str, tuple[float, str]] = OrderedDict()  # never opened by cookie yet

    def __len__(self) -> int:
        return len(self._entries) + len(self._new)

    def _table(self, session_id: str) -> OrderedDict[str, tuple[float, str]] | None:
        if session_id in self._entries:
            return self._entries
        return self._new if session_id in self._new else None

    async def load(self, session_id: str) -> dict | None:
        table = self._table(session_id)
        if table is None:
            return None
        entry = table[session_id]
        if self._clock() - entry[0] > self.idle_timeout_sec:
            del table[session_id]
            return None
        table.move_to_end(session_id)
        return json.loads(entry[1])

    async def save(self, session_id: str, data: dict) -> None:
        text = json.dumps(data, ensure_ascii=False)  # also proves the data is JSON-able
        table = self._table(session_id)
        if table is None:
            table = self._new
        table[session_id] = (self._clock(), text)
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


def _jsonable(data: dict) -> dict:
    return {
        key: {PROMPT_KEY: value.to_dict()} if isinstance(value, AbstractChatPrompt) else value
        for key, value in data.items()
    }


class HttpSession:
    """One request's view of its session (the 0.3 ``request.state.session`` shape: ``get_session()``).

    ``data`` may hold live chat prompt objects while a request runs; they are saved as
    ``prompt.to_dict()`` JSON.
    """

    def __init__(self, store: SessionStore, session_id: str, data: dict, is_new: bool) -> None:
        self.store = store
        self.session_id = session_id
        self.data = data
        self.is_new = is_new

    def get_session(self) -> dict:
        return self.data

    async def reload(self) -> None:
        """Read the latest stored data (after taking the session's lock, to see the previous turn)."""
        latest = await self.store.load(self.session_id) or {}
        self.data.clear()
        self.data.update(latest)

    async def save(self) -> None:
        await self.store.save(self.session_id, _jsonable(self.data))

    async def update(self, **values: Any) -> None:
        """Set keys on the latest stored data (so concurrent requests' other keys are kept) and save."""
        latest = await self.store.load(self.session_id) or {}
        latest.update(_jsonable(values))
        self.data.update(values)
        await self.store.save(self.session_id, latest)

    async def remove(self, *keys: str) -> None:
        latest = await self.store.load(self.session_id) or {}
        for key in keys:
            latest.pop(key, None)
            self.data.pop(key, None)
        await self.store.save(self.session_id, latest)


class AppSession(HttpSession):
    """The session of the app's own session middleware (0.3's FastSessionMiddleware, or any object with
    ``get_session() -> dict`` and optionally ``save_session()`` / ``get_session_id()``).

    ``data`` is the middleware's live dict: values are kept as they are (chat prompts as objects, as in
    0.3) and each change is followed by the middleware's ``save_session()``.
    """

    def __init__(self, manager: Any) -> None:
        data = manager.get_session()
        if not isinstance(data, dict):
            raise ConfigurationError(f"request.state.session.get_session() must return a dict, got "
                                     f"{type(data).__name__}; fix the session middleware.")
        get_id = getattr(manager, "get_session_id", None)
        session_id = get_id() if callable(get_id) else None
        super().__init__(_NoStore(), str(session_id) if session_id is not None else f"app-{id(data)}", data,
                         is_new=False)  # the middleware sets its own cookie
        self.manager = manager

    def _save(self) -> None:
        save = getattr(self.manager, "save_session", None)
        if callable(save):
            save()

    async def reload(self) -> None:
        return None  # the dict is the live session

    async def save(self) -> None:
        self._save()

    async def update(self, **values: Any) -> None:
        self.data.update(values)
        self._save()

    async def remove(self, *keys: str) -> None:
        for key in keys:
            self.data.pop(key, None)
        self._save()


class _NoStore(SessionStore):
    """AppSession's store: the app's middleware keeps the data, so nothing is kept here."""

    async def load(self, session_id: str) -> dict | None:
        return None

    async def save(self, session_id: str, data: dict) -> None:
        return None

    async def delete(self, session_id: str) -> None:
        return None


def app_session_manager(request: Request) -> Any:
    """The app's own session manager on ``request.state.session`` (not one ChatStream made), or None."""
    manager = getattr(request.state, "session", None)
    if manager is None or isinstance(manager, HttpSession) or not callable(getattr(manager, "get_session", None)):
        return None
    return manager


def browser_session_data(request: Request, sessions: SessionManager | None) -> dict | None:
    """A browser request's session dict: the app's session middleware's (0.3's FastSessionMiddleware), else the
    one ``sessions`` (ChatStream's) opened for this request, else None."""
    manager = app_session_manager(request)
    if manager is not None:
        return manager.get_session()
    session = sessions.current(request) if sessions is not None else None
    return session.data if session is not None else None


class SessionManager:
    """Opens the session of a request from its signed cookie and sets the cookie on new sessions."""

    def __init__(
        self,
        store: SessionStore | None = None,
        secret: str | bytes | None = None,
        *,
        cookie_name: str = SESSION_COOKIE_NAME,
        secure: bool = False,
        max_age_sec: int | None = None,
        logger: logging.Logger | None = None,
        random_secret_warning: str = "no session secret given; using a random per-process secret",
    ) -> None:
        self.cookie_name = cookie_name
        self.max_age_sec = max_age_sec
        self.logger = logger or logging.getLogger("chatstream")
        self._random_secret_warning = random_secret_warning
        self._warned = False
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.store: SessionStore = MemorySessionStore()
        self.secure = False
        self._signer = TimestampSigner(process_secret(), salt="chatstream.session")
        self._secret_given = False
        self.configure(store=store, secret=secret, secure=secure)

    def configure(
        self, *, store: SessionStore | None = None, secret: str | bytes | None = None, secure: bool | None = None
    ) -> None:
        """Replace the store, the signing secret or the cookie's Secure flag (None keeps the current one)."""
        if store is not None:
            if not isinstance(store, SessionStore):
                raise ConfigurationError(
                    f"the session store must be a chatstream.SessionStore, got {type(store).__name__}; "
                    "wrap your storage in a SessionStore subclass (load/save/delete)."
                )
            self.store = store
        if secret is not None:
            if not isinstance(secret, (str, bytes)) or len(secret) < 16:
                raise ConfigurationError("the session secret must be a str or bytes of at least 16 characters.")
            self._signer = TimestampSigner(secret, salt="chatstream.session")
            self._secret_given = True
        if secure is not None:
            self.secure = bool(secure)

    def lock(self, session_id: str) -> asyncio.Lock:
        """The lock of one session (kept while anyone holds a reference to it)."""
        lock = self._locks.get(session_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[session_id] = lock
        return lock

    def current(self, request: Request) -> HttpSession | None:
        """The session already opened for this request, if any."""
        return getattr(request.state, _STATE_ATTR, None)

    async def open(self, request: Request) -> HttpSession:
        """The request's session: the one its cookie names, or a new one."""
        session = self.current(request)
        if session is not None:
            return session
        manager = app_session_manager(request)
        if manager is not None:  # the app's session middleware (0.3's FastSessionMiddleware)
            session = AppSession(manager)
            setattr(request.state, _STATE_ATTR, session)
            return session
        session_id = self._verified_id(request.cookies.get(self.cookie_name))
        data = await self.store.load(session_id) if session_id else None
        if session_id is None:
            session = HttpSession(self.store, secrets.token_urlsafe(24), {}, is_new=True)
        else:
            session = HttpSession(self.store, session_id, data or {}, is_new=False)
            if data is not None:
                await self.store.opened_by_cookie(session_id)
        setattr(request.state, _STATE_ATTR, session)
        if getattr(request.state, "session", None) is None:
            request.state.session = session  # what 0.3 callbacks read
        return session

    async def rotate(self, session: HttpSession) -> None:
        """Move ``session`` to a new id (its data kept, the old id forgotten) and send the new cookie.

        Called when the session's privileges change (a pass phrase was entered), so that whoever knew
        or planted the old cookie does not get the new role (session fixation).
        """
        old_id = session.session_id
        data = await self.store.load(old_id) or {}
        session.session_id = secrets.token_urlsafe(24)
        await self.store.save(session.session_id, data)
        await self.store.opened_by_cookie(session.session_id)
        await self.store.delete(old_id)
        session.is_new = True  # attach() sets the new cookie

    def _verified_id(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            return self._signer.unsign(cookie, max_age=self.max_age_sec).decode()
        except BadSignature:
            return None

    def attach(self, response: Response, session: HttpSession | None) -> None:
        """Set the signed cookie on ``response`` when ``session`` is new."""
        if session is None or not session.is_new:
            return
        if not self._secret_given and not self._warned:
            self._warned = True
            self.logger.warning(self._random_secret_warning)
        response.set_cookie(
            self.cookie_name,
            self._signer.sign(session.session_id).decode(),
            max_age=self.max_age_sec,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )
