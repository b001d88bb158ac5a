"""ChatStream 0.3's ``role_def_to_client_role``: a ``(name, definition)`` pair of ``client_roles`` as 0.3's
client_role dict (``client_role_name``, ``allowed_apis``, ``enable_dev_tool``), the shape roles have in 0.3's
sessions and ``request.state``."""

from __future__ import annotations


def role_def_to_client_role(role_def: tuple[str, dict]) -> dict:
    name, definition = role_def
    apis = definition.get("apis", {})
    return {"client_role_name": name, "allowed_apis": apis.get("allow"),
            "enable_dev_tool": apis.get("enable_dev_tool", False)}
