"""ChatStream 0.3's ``ClientRoleWrapper``, over ``chatstream.serving.client_roles.ClientRoles`` (which validates the
definitions and decides every role). Roles come out as 0.3's dicts (``client_role_name``, ``allowed_apis``,
``enable_dev_tool``); ``request.state.__chatstream__`` holds a request's final role, as in 0.3.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from ...serving.client_roles import SESSION_ROLE_KEY as CHAT_STREAM_CLIENT_ROLE
from ...serving.client_roles import ClientRole, ClientRoles
from ...serving.sessions import browser_session_data


class ClientRoleWrapper:
    """``ClientRoleWrapper(logger, eloc, client_roles)``: 0.3's view of a ``client_roles`` definition.

    ``client_roles`` is the dict (checked at once; a bad one raises ``ConfigurationError``, a ``ValueError``),
    a ``ClientRoles``, or None (no role-based access control, as in 0.3). ``sessions``, when given (ChatStream
    passes its ``SessionManager``), finds ChatStream's own session of a browser request.
    """

    def __init__(self, logger: Any, eloc: Any, client_roles: dict | ClientRoles | None = None,
                 sessions: Any = None) -> None:
        self.logger = logger
        self.eloc = eloc
        self.sessions = sessions
        self.roles: ClientRoles | None = None
        if isinstance(client_roles, ClientRoles):
            self.roles = client_roles
        elif client_roles is not None:
            self.roles = ClientRoles(client_roles)
        self.client_roles = self.roles.definitions if self.roles is not None else None

    def defined_roles(self) -> ClientRoles:
        if self.roles is None:
            raise ValueError("this ClientRoleWrapper has no client_roles (role-based access control is off).")
        return self.roles

    def is_use_client_role_based_access_control(self) -> bool:
        return self.roles is not None

    def verify(self) -> bool:
        """True: the definitions were checked when this wrapper was made (a bad one raised then)."""
        self.defined_roles()
        return True

    # -- requests --------------------------------------------------------------------------------------

    def is_agent_client_access(self, request: Request) -> bool:
        """An agent sends ``X-ChatStream-Auth-Header`` or ``X-FastSession-Skip: skip``."""
        return ClientRoles.is_agent(request)

    def is_browser_client_access(self, request: Request) -> bool:
        return not self.is_agent_client_access(request)

    def get_browser_session(self, request: Request) -> dict | None:
        """The browser's session dict: the app's session middleware's (0.3's FastSessionMiddleware), else
        the one ChatStream opened for this request, else None."""
        return browser_session_data(request, self.sessions)

    def current_role(self, request: Request) -> ClientRole | None:
        """The request's role, decided as ChatStream's endpoints decide it."""
        roles = self.defined_roles()
        if self.is_agent_client_access(request):
            return roles.agent_role(request)
        return roles.browser_role(self.get_browser_session(request) or {})

    def role_named(self, client_role: dict | None) -> ClientRole | None:
        """The defined role a 0.3 client_role dict names, or None."""
        name = client_role.get("client_role_name") if isinstance(client_role, dict) else None
        return self.defined_roles().roles.get(name) if isinstance(name, str) else None

    def get_agent_current_client_role(self, request: Request) -> dict | None:
        return self.get_request_state(request, CHAT_STREAM_CLIENT_ROLE, None)

    def set_request_state(self, request: Request, key: str, value: Any) -> None:
        """Write ``key`` into ChatStream's part of ``request.state`` (``request.state.__chatstream__``)."""
        if not hasattr(request.state, "__chatstream__"):
            request.state.__chatstream__ = {}
        request.state.__chatstream__[key] = value

    def get_request_state(self, request: Request, key: str, default_value: Any) -> Any:
        if not hasattr(request.state, "__chatstream__"):
            request.state.__chatstream__ = {}
        return request.state.__chatstream__.get(key, default_value)

    # -- definitions -----------------------------------------------------------------------------------

    def get_browser_default_client_role(self) -> dict:
        """The browser default role as 0.3's dict, with ``"enabled": True``."""
        return {**self.defined_roles().browser_default.to_dict(), "enabled": True}

    def get_agent_default_client_role(self) -> dict:
        """The agent default role as 0.3's dict with ``"enabled": True``, or ``{"enabled": False}``."""
        default = self.defined_roles().agent_default
        return {**default.to_dict(), "enabled": True} if default is not None else {"enabled": False}

    def get_agent_special_role_defs(self) -> list[tuple[str, dict]]:
        """``(name, definition)`` of the agent roles other than the default, in definition order."""
        return self._special_role_defs(use_session=False)

    def get_browser_special_role_defs(self) -> list[tuple[str, dict]]:
        """``(name, definition)`` of the browser roles other than the default, in definition order."""
        return self._special_role_defs(use_session=True)

    def _special_role_defs(self, use_session: bool) -> list[tuple[str, dict]]:
        roles = self.defined_roles()
        return [(role.name, roles.definitions[role.name]) for role in roles.special_roles(use_session)]


def for_chat_stream(chat_stream: Any) -> ClientRoleWrapper:
    """``chat_stream.client_role_wrapper`` (0.3's attribute): a wrapper over the ChatStream's roles and sessions."""
    return ClientRoleWrapper(chat_stream.logger, chat_stream.eloc, chat_stream.client_roles, chat_stream.sessions)


__all__ = ["ClientRoleWrapper"]
