"""ChatStream 0.3's ``append_middlewares(chat_stream, app, logger, eloc, opts=None)``, over
``chatstream.serving.api.append_middlewares`` (sessions need no middleware now; docs/migration-0.3.md)."""

from __future__ import annotations

from typing import Any

from ..serving import api


def append_middlewares(chat_stream: Any, app: Any, logger: Any = None, eloc: Any = None,
                       opts: dict | None = None) -> None:
    """Configure ``chat_stream``'s sessions and, with ``develop_mode``, CORS on ``app`` (0.3's argument order)."""
    api.append_middlewares(chat_stream, app, opts)


__all__ = ["append_middlewares"]
