"""Server-side sessions: a replaceable store, a signed cookie that carries only the session id.

``SessionStore`` is the interface an application replaces; the stores ChatStream brings are chosen by
URL (``session_stores.open_session_store``: ``memory``, ``sqlite:///PATH``, ``redis://...``; see
docs/sessions.md). ``MemorySessionStore`` is ``ChatStream(...)``'s default. ``SessionManager`` signs the
session id into an ``HttpOnly``, ``SameSite=Lax`` cookie with itsdangerous, using the secret the
application passes; without one it uses a random per-process secret and logs a warning once.
``lock(session_id)`` gives the one lock per session that keeps two requests of one session from
interleaving their history: a per-process lock, plus the store's lease when the store is shared.
Writes are revision-checked (``HttpSession.update``): a write based on stale data is retried on the
latest data, and a turn's commit is refused (``SessionConflictError``) when its history changed meanwhile.

When the app brings its own session middleware, as ChatStream 0.3 apps do (``fastsession``'s
``FastSessionMiddleware`` sets ``request.state.session``, an object with ``get_session()``), ChatStream
uses that session instead (``AppSession``): it sets no cookie of its own and keeps the chat prompt in
the app's session dict as a live object, as 0.3 did, so ``get_session()["chat_prompt"]`` is the prompt.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import weakref
from collections.abc import Callable
from typing import Any

from itsdangerous import BadSignature, TimestampSigner
from starlette.requests import Request
from starlette.responses import Response

from ..engine.chat_prompt import AbstractChatPrompt
from ..exceptions import ConfigurationError, SessionConflictError
from .session_stores import MemorySessionStore, SessionStore, open_session_store
from .session_stores.base import Lease

SESSION_COOKIE_NAME = "chatstream_session"
PROMPT_KEY = "__chatstream_prompt__"
_STATE_ATTR = "chatstream_session"
_process_secret: str | None = None
_WRITE_TRIES = 8  # revision-checked writes retried on the latest data before giving up


def process_secret() -> str:
    """A random secret made once per process (never a fixed string)."""
    global _process_secret
    if _process_secret is None:
        _process_secret = secrets.token_urlsafe(32)
    return _process_secret


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
        self._loaded: dict = {}  # the stored data as reload() read it (what a guarded update compares with)

    def get_session(self) -> dict:
        return self.data

    async def reload(self) -> None:
        """Read the latest stored data (after taking the session's lock, to see the previous turn)."""
        latest, _ = await self.store.load_revision(self.session_id)
        self._loaded = dict(latest or {})
        self.data.clear()
        self.data.update(latest or {})

    async def save(self) -> None:
        await self.store.save(self.session_id, _jsonable(self.data))

    async def update(self, *, guard: tuple[str, ...] = (), **values: Any) -> None:
        """Set keys on the latest stored data (so concurrent requests' other keys are kept) and save.

        The write is revision-checked: when another writer saved in between, it is redone on the newer
        data. ``guard`` names keys that must still hold what ``reload()`` read (a turn guards its history):
        when one changed, nothing is written and ``SessionConflictError`` is raised.
        """
        await self._write(lambda latest: latest.update(_jsonable(values)), guard)
        self.data.update(values)

    async def remove(self, *keys: str) -> None:
        await self._write(lambda latest: [latest.pop(key, None) for key in keys], ())
        for key in keys:
            self.data.pop(key, None)

    async def _write(self, change: Callable[[dict], Any], guard: tuple[str, ...]) -> None:
        for _ in range(_WRITE_TRIES):
            latest, revision = await self.store.load_revision(self.session_id)
            latest = latest or {}
            changed = [key for key in guard if latest.get(key) != self._loaded.get(key)]
            if changed:
                raise SessionConflictError(f"session data {changed} changed while this request ran (another "
                                           "request of the session wrote first); nothing was saved, send it again.")
            change(latest)
            if await self.store.save_if(self.session_id, latest, revision):
                self._loaded.update({key: latest.get(key) for key in guard})
                return
        raise SessionConflictError(f"the session was written by others {_WRITE_TRIES} times while this request "
                                   "tried to save it; nothing was saved, send it again.")


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

    async def update(self, *, guard: tuple[str, ...] = (), **values: Any) -> None:
        self.data.update(values)  # the app's middleware keeps the live dict: nothing to compare
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


class SessionLock:
    """The lock of one session: this process's ``asyncio.Lock``, then the store's lease (when it has one).

    ``acquire()`` waits for both; ``release()`` frees them (the lease in a background task, so that it
    can be called where 0.3 code released an ``asyncio.Lock``).
    """

    def __init__(self, local: asyncio.Lock, make_lease: Callable[[], Lease | None]) -> None:
        self._local, self._make_lease = local, make_lease
        self._lease: Lease | None = None
        self._queued = 0  # acquire() calls waiting for the local lock

    def locked(self) -> bool:
        return self._local.locked()

    def free(self) -> bool:
        """Whether ``acquire()`` returns without waiting: nobody holds or waits for the local lock and the store
        keeps no lease (then a caller need not watch for its client leaving meanwhile)."""
        return not self._local.locked() and not self._queued and self._make_lease() is None

    async def acquire(self) -> bool:
        self._queued += 1
        try:
            await self._local.acquire()
        finally:
            self._queued -= 1
        try:
            lease = self._make_lease()
            if lease is not None:
                await lease.acquire()
            self._lease = lease
        except BaseException:
            self._local.release()
            raise
        return True

    def release(self) -> None:
        """Give the lease back (in a background task, so that 0.3 code can release it like an asyncio.Lock),
        then free the local lock: this process's next request of the session wakes at once instead of
        polling the lease. While the store fails, the local lock is freed at once and the lease retried in
        the background, so a store blip neither blocks this process nor keeps the session locked."""
        lease, self._lease = self._lease, None
        if lease is None:
            self._local.release()
            return
        task = asyncio.get_running_loop().create_task(self._give_back(lease))
        _releasing.add(task)
        task.add_done_callback(_releasing.discard)

    async def _give_back(self, lease: Lease) -> None:
        try:
            await lease.release(retry=False)
        except Exception:
            self._local.release()
            try:
                await lease.release()
            except Exception:  # the store stayed down: the lease runs out by itself
                logging.getLogger("chatstream").warning("could not give a session lease back; it runs out in "
                                                        "%ss", lease.lease_sec)
            return
        self._local.release()

    async def __aenter__(self) -> SessionLock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.release()


_releasing: set[asyncio.Task] = set()  # lease releases under way (kept referenced until they end)


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
        self._locks: weakref.WeakValueDictionary[str, SessionLock] = weakref.WeakValueDictionary()
        self.store: SessionStore = MemorySessionStore()
        self.secure = False
        self._signer: TimestampSigner = _Signer(process_secret(), salt="chatstream.session")
        self._secret_given = False
        self._cookie_template: tuple[tuple, bytes] = ((), b"")
        self.configure(store=store, secret=secret, secure=secure)

    def configure(
        self, *, store: SessionStore | str | None = None, secret: str | bytes | None = None,
        secure: bool | None = None
    ) -> None:
        """Replace the store (a SessionStore or a URL: memory, sqlite:///PATH, redis://...), the signing secret
        or the cookie's Secure flag (None keeps the current one)."""
        if store is not None:
            if not isinstance(store, (SessionStore, str)):
                raise ConfigurationError(
                    f"the session store must be a chatstream.SessionStore or a URL, got {type(store).__name__}; "
                    "wrap your storage in a SessionStore subclass (load/save/delete)."
                )
            self.store = open_session_store(store)
        if secret is not None:
            if not isinstance(secret, (str, bytes)) or len(secret) < 16:
                raise ConfigurationError("the session secret must be a str or bytes of at least 16 characters.")
            self._signer = _Signer(secret, salt="chatstream.session")
            self._secret_given = True
        if secure is not None:
            self.secure = bool(secure)

    def lock(self, session_id: str) -> SessionLock:
        """The lock of one session: per process (kept while anyone holds a reference to it), plus the
        store's cross-process lease when the store has one."""
        lock = self._locks.get(session_id)
        if lock is None:  # one object per session: only the holder of its local lock sets its lease
            lock = SessionLock(asyncio.Lock(), lambda: self.store.lease(session_id))
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
        value = self._signer.sign(session.session_id).decode()
        shape = (self.cookie_name, self.max_age_sec, self.secure)
        if self._cookie_template[0] != shape:  # the header Response.set_cookie writes, made once per shape
            template = Response()
            self._set_cookie(template, _COOKIE_PLACEHOLDER)
            self._cookie_template = (shape, template.raw_headers[-1][1])
        if _COOKIE_SAFE.fullmatch(value):  # as set_cookie writes it (no quoting needed), without http.cookies
            response.raw_headers.append((b"set-cookie", self._cookie_template[1].replace(
                _COOKIE_PLACEHOLDER.encode(), value.encode("latin-1"))))
        else:
            self._set_cookie(response, value)

    def _set_cookie(self, response: Response, value: str) -> None:
        response.set_cookie(self.cookie_name, value, max_age=self.max_age_sec, path="/", secure=self.secure,
                            httponly=True, samesite="lax")


_COOKIE_PLACEHOLDER = "chatstreamcookievalue"
_COOKIE_SAFE = re.compile(r"[A-Za-z0-9._-]+")  # what signed session ids are made of: never quoted in a cookie


class _Signer(TimestampSigner):
    """itsdangerous' TimestampSigner, with the derived key (an HMAC of the secret) made once, not per cookie."""

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        cache = self.__dict__.setdefault("_derived", {})
        key = cache.get(secret_key)
        if key is None:
            key = cache[secret_key] = super().derive_key(secret_key)
        return key
