"""ChatStream 0.3's ``ClientRoleAuthorizerForAgent``: the role an agent's ``X-ChatStream-Auth-Header`` phrase
gives (``header_phrase`` or ``header_phrase_sha256``), decided by ``ClientRoles.header_role``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from .client_role_wrapper import ClientRoleWrapper


class ClientRoleAuthorizerForAgent:
    def __init__(self, logger: Any, eloc: Any, client_role_wrapper: ClientRoleWrapper) -> None:
        self.logger = logger
        self.eloc = eloc
        self.client_role_wrapper = client_role_wrapper
        self.agent_client_roles = client_role_wrapper.get_agent_special_role_defs()

    def get_promoted_role(self, request: Request) -> dict | None:
        """0.3's client_role dict of the role whose phrase the request's header holds, or None."""
        role = self.client_role_wrapper.defined_roles().header_role(request)
        if role is None:
            return None
        self.logger.debug(f"auth_method:{role.auth_method} matched and role_name:'{role.name}' resolved")
        return role.to_dict()


__all__ = ["ClientRoleAuthorizerForAgent"]
