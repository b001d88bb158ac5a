"""The one authorisation step of the 0.3 endpoints: the caller's role and session, or a 403.

    gate = Gate(client_roles, sessions, locale, logger)
    caller = await gate.authorize(request, "get_prompt")   # a Caller, or the 403 Response to send
    if isinstance(caller, Response): return caller
    return caller.respond(JSONResponse(...))               # the session cookie and nosniff added

A request is an *agent* (no session) or a *browser* whose role is kept in its session (see
chatstream.serving.client_roles). ``health`` is open to every caller.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from ._http import NOSNIFF, error_response
from .client_roles import ClientRole, ClientRoles
from .locale import Locale
from .sessions import HttpSession, SessionManager

OPEN_APIS = frozenset({"health"})


def respond(sessions: SessionManager, session: HttpSession | None, response: Response) -> Response:
    """``response`` with the session's cookie (when it changed) and ``nosniff``."""
    sessions.attach(response, session)
    for key, value in NOSNIFF.items():
        response.headers.setdefault(key, value)
    return response


@dataclass(frozen=True)
class Caller:
    """An authorised request: its role (None for an agent when no agent role exists) and browser session."""

    role: ClientRole | None
    session: HttpSession | None
    sessions: SessionManager

    def respond(self, response: Response) -> Response:
        return respond(self.sessions, self.session, response)


class Gate:
    """Gives each request its role and session and refuses the APIs its role does not allow."""

    def __init__(self, client_roles: ClientRoles | None, sessions: SessionManager, locale: Locale,
                 logger: logging.Logger) -> None:
        self.client_roles, self.sessions, self.locale, self.logger = client_roles, sessions, locale, logger

    async def authorize(self, request: Request, api_name: str) -> Caller | Response:
        """The caller (its session opened for a browser), or the 403 to send."""
        if self.client_roles is None:
            raise RuntimeError("Gate.client_roles is not set (ChatStream.set_client_roles sets it)")
        if self.client_roles.is_agent(request):
            role, session = self.client_roles.agent_role(request), None
        else:
            session = await self.sessions.open(request)
            role = self.client_roles.browser_role(session.data)
        caller = Caller(role, session, self.sessions)
        if api_name not in OPEN_APIS and (role is None or not role.allows(api_name)):
            role_name = role.name if role is not None else "-"
            self.logger.info("role %s denied %s", role_name, api_name)
            return caller.respond(error_response(403, "forbidden", self.locale.t("forbidden", role=role_name,
                                                                                  api=api_name)))
        return caller
