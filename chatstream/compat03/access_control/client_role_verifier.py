"""ChatStream 0.3's ``ClientRoleVerifier``: may this request call that API? (``ChatStream.verify_role_for_api``
answers with it.) The final role is set by ``ClientRoleFinalizer`` and judged by ``ClientRole.allows``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from ...serving.api import API_NAMES
from ...serving.client_roles import SESSION_ROLE_KEY as CHAT_STREAM_CLIENT_ROLE
from .client_role_finalizer import ClientRoleFinalizer


class ClientRoleVerifier:
    def __init__(self, chat_stream: Any) -> None:
        self.logger = chat_stream.logger
        self.eloc = chat_stream.eloc
        self.client_role_wrapper = chat_stream.client_role_wrapper
        self.finalizer = ClientRoleFinalizer(self.logger, self.eloc, self.client_role_wrapper)

    def verify_client_role(self, request: Request, api_name: str) -> dict:
        """``{"success": bool, "message": str}`` (0.3's result)."""
        wrapper = self.client_role_wrapper
        self.finalizer.set_final_role(request)
        final_client_role = wrapper.get_request_state(request, CHAT_STREAM_CLIENT_ROLE, None)
        if api_name not in API_NAMES:
            return {"success": False,
                    "message": f"Invalid api_name:'{api_name}'. api_name should any of {list(API_NAMES)}"}
        role = wrapper.role_named(final_client_role)
        if role is None:
            return {"success": False, "message": "This request has no client role."}
        return {"success": role.allows(api_name), "message": ""}


__all__ = ["ClientRoleVerifier"]
