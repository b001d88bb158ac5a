"""Session stores, one module per backend, chosen by URL (``open_session_store``):

- ``memory``: this process's memory (``memory.MemorySessionStore``, ``ChatStream(...)``'s default);
- ``sqlite:///PATH`` (an absolute path; ``sqlite://PATH`` is relative to the working directory): a SQLite
  file, durable, shared by the processes of one machine (``sqlite.SqliteSessionStore``, ``chatstream
  serve``'s default under ``default_sqlite_path()``);
- ``redis://[:password@]host:port/db`` or ``rediss://...``: Redis or Valkey, shared across machines
  (``redis.RedisSessionStore``, needs redis-py: ``chatstream[redis]``).

Query parameters set the store's options: ``idle_timeout_sec`` and ``lease_sec`` (SQLite and Redis),
``prefix`` (Redis), ``max_sessions`` (memory); e.g. ``redis://cache:6379/0?prefix=chat:&lease_sec=20``.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from ...exceptions import ConfigurationError
from .base import SessionStore
from .memory import MemorySessionStore

_OPTIONS = {"idle_timeout_sec": float, "lease_sec": float, "prefix": str, "max_sessions": int}
_ALLOWED = {"memory": {"max_sessions", "idle_timeout_sec"}, "sqlite": {"idle_timeout_sec", "lease_sec"},
            "redis": {"idle_timeout_sec", "lease_sec", "prefix"}}


def default_sqlite_path() -> Path:
    """Where ``chatstream serve`` keeps sessions: ``$XDG_STATE_HOME/chatstream/sessions.sqlite3``
    (``~/.local/state`` when XDG_STATE_HOME is unset)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "chatstream" / "sessions.sqlite3"


def default_store_url() -> str:
    return f"sqlite://{default_sqlite_path()}"


def _options(kind: str, query: str, shown: str) -> dict:
    options = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name not in _ALLOWED[kind]:
            raise ConfigurationError(f"unknown option {name!r} in the session store URL {shown!r}; a {kind} store "
                                     f"takes {sorted(_ALLOWED[kind])}.")
        try:
            options[name] = _OPTIONS[name](value)
        except ValueError:
            raise ConfigurationError(f"option {name}={value!r} of the session store URL {shown!r} must be a "
                                     f"{_OPTIONS[name].__name__}.") from None
    return options


def open_session_store(spec: str | SessionStore) -> SessionStore:
    """The store ``spec`` names (a URL, see the module doc), or ``spec`` itself when it is a store."""
    if isinstance(spec, SessionStore):
        return spec
    if not isinstance(spec, str):
        raise ConfigurationError(f"the session store must be a chatstream.SessionStore or a URL (memory, "
                                 f"sqlite:///PATH, redis://HOST:PORT/DB), got {type(spec).__name__}.")
    from .redis import redact_url

    shown = redact_url(spec) if spec.startswith(("redis://", "rediss://")) else spec
    base, _, query = spec.partition("?")
    if base in ("memory", "memory://"):
        return MemorySessionStore(**_options("memory", query, shown))
    if base.startswith("sqlite://"):
        path = base[len("sqlite://"):]
        if not path:
            raise ConfigurationError(f"the session store URL {shown!r} names no file; use sqlite:///PATH.")
        from .sqlite import SqliteSessionStore

        return SqliteSessionStore(urllib.parse.unquote(path), **_options("sqlite", query, shown))
    if base.startswith(("redis://", "rediss://")):
        from .redis import RedisSessionStore

        parts = urllib.parse.urlsplit(spec)
        ours = {k: v for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k in _OPTIONS}
        theirs = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k not in _OPTIONS]
        url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(theirs)))
        return RedisSessionStore(url, **_options("redis", urllib.parse.urlencode(ours), shown))
    raise ConfigurationError(f"unknown session store {shown!r}; use memory, sqlite:///PATH or "
                             "redis://[:password@]host:port/db (rediss:// for TLS).")


__all__ = ["MemorySessionStore", "SessionStore", "default_sqlite_path", "default_store_url", "open_session_store"]
