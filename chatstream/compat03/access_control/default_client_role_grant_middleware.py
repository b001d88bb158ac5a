"""ChatStream 0.3's ``DefaultClientRoleGrantMiddleware`` and ``CHAT_STREAM_CLIENT_ROLE``.

``dispatch(request, call_next)`` grants as 0.3 did: a browser whose session keeps no role gets the
browser default (0.3's dict, in the session), an agent gets the agent default (in ``request.state``).
Added to an app (``app.add_middleware(DefaultClientRoleGrantMiddleware, chat_stream=chat_stream)``), it
passes requests through: ChatStream gives each request the same role itself, so nothing needs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ...serving.client_roles import SESSION_ROLE_KEY as CHAT_STREAM_CLIENT_ROLE


class DefaultClientRoleGrantMiddleware:
    def __init__(self, app: ASGIApp, chat_stream: Any = None) -> None:
        self.app = app
        self.chat_stream = chat_stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        wrapper = getattr(self.chat_stream, "client_role_wrapper", None)
        if wrapper is not None and wrapper.is_use_client_role_based_access_control():
            roles = wrapper.defined_roles()
            if wrapper.is_browser_client_access(request):
                session = wrapper.get_browser_session(request)
                if session is not None and session.get(CHAT_STREAM_CLIENT_ROLE) is None:
                    session[CHAT_STREAM_CLIENT_ROLE] = roles.browser_default.to_dict()
            elif roles.agent_default is not None:
                wrapper.set_request_state(request, CHAT_STREAM_CLIENT_ROLE, roles.agent_default.to_dict())
        return await call_next(request)


__all__ = ["CHAT_STREAM_CLIENT_ROLE", "DefaultClientRoleGrantMiddleware"]
