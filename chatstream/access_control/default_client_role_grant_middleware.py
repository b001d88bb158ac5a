"""The ChatStream 0.3 module path of ``DefaultClientRoleGrantMiddleware`` and ``CHAT_STREAM_CLIENT_ROLE``.

ChatStream now gives each request its client role itself (``chatstream.serving.client_roles``), so the
middleware that 0.3 apps add passes requests through unchanged; it is kept so that they still start.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ..serving.client_roles import SESSION_ROLE_KEY as CHAT_STREAM_CLIENT_ROLE


class DefaultClientRoleGrantMiddleware:
    """``app.add_middleware(DefaultClientRoleGrantMiddleware, chat_stream=chat_stream)``: a pass-through."""

    def __init__(self, app: ASGIApp, chat_stream: Any = None) -> None:
        self.app = app
        self.chat_stream = chat_stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


__all__ = ["CHAT_STREAM_CLIENT_ROLE", "DefaultClientRoleGrantMiddleware"]
