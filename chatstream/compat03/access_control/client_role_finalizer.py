"""ChatStream 0.3's ``ClientRoleFinalizer``: puts a request's final role (0.3's dict) into
``request.state.__chatstream__["chat_stream_client_role"]``.

A browser gets the role kept in its session, else the browser default; an agent gets the role of its
``X-ChatStream-Auth-Header`` phrase, else the agent default, else None. (0.3 left the role unset when
``DefaultClientRoleGrantMiddleware`` had not run first.)
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from ...serving.client_roles import SESSION_ROLE_KEY as CHAT_STREAM_CLIENT_ROLE
from ...serving.client_roles import ClientRole
from .client_role_authorizer_for_agent import ClientRoleAuthorizerForAgent
from .client_role_wrapper import ClientRoleWrapper


class ClientRoleFinalizer:
    def __init__(self, logger: Any, eloc: Any, client_role_wrapper: ClientRoleWrapper) -> None:
        self.logger = logger
        self.eloc = eloc
        self.client_role_wrapper = client_role_wrapper
        self.agent_client_role_authorizer = ClientRoleAuthorizerForAgent(logger, eloc, client_role_wrapper)

    def set_final_role(self, request: Request) -> None:
        if self.client_role_wrapper.is_browser_client_access(request):
            self.handle_browser_client_access(request)
        else:
            self.handle_agent_client_access(request)

    def handle_browser_client_access(self, request: Request) -> None:
        roles = self.client_role_wrapper.defined_roles()
        self._set(request, roles.browser_role(self.client_role_wrapper.get_browser_session(request) or {}))

    def handle_agent_client_access(self, request: Request) -> None:
        self._set(request, self.client_role_wrapper.defined_roles().agent_role(request))

    def promote_agent_client_if_needed(self, request: Request) -> None:
        """Set the header phrase's role, if the request sends one that matches."""
        role = self.client_role_wrapper.defined_roles().header_role(request)
        if role is not None:
            self._set(request, role)

    def _set(self, request: Request, role: ClientRole | None) -> None:
        value = role.to_dict() if role is not None else None
        self.client_role_wrapper.set_request_state(request, CHAT_STREAM_CLIENT_ROLE, value)


__all__ = ["ClientRoleFinalizer"]
