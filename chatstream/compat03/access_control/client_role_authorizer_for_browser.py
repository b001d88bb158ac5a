"""ChatStream 0.3's ``ClientRoleAuthorizerForBrowser``: the role a pass phrase typed into the chat gives
(``ui_pass_phrase`` or ``ui_pass_phrase_sha256``), decided by ``ClientRoles.role_for_phrase``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from .client_role_wrapper import ClientRoleWrapper


class ClientRoleAuthorizerForBrowser:
    def __init__(self, logger: Any, eloc: Any, client_role_wrapper: ClientRoleWrapper) -> None:
        self.logger = logger
        self.eloc = eloc
        self.client_role_wrapper = client_role_wrapper
        self.browser_client_roles = client_role_wrapper.get_browser_special_role_defs()

    def get_promoted_role(self, request: Request, user_input: str | None) -> dict | None:
        """0.3's client_role dict of the role whose pass phrase ``user_input`` is, or None."""
        if not user_input:
            return None
        role = self.client_role_wrapper.defined_roles().role_for_phrase(user_input)
        if role is None:
            return None
        self.logger.debug(f"auth_method:{role.auth_method} authorized.")
        return role.to_dict()


__all__ = ["ClientRoleAuthorizerForBrowser"]
