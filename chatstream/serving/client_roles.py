"""Client roles in the ChatStream 0.3 format: which APIs a client may call, and how it gets a role.

    client_roles = {
        "user":  {"apis": {"allow": ["chat_stream", "clear_context"], "auth_method": "nothing",
                           "use_session": True}},                       # default role of browsers
        "admin": {"apis": {"allow": "all", "auth_method": "ui_pass_phrase", "ui_pass_phrase": "...",
                           "use_session": True, "enable_dev_tool": True}},  # typed into the chat
        "agent": {"apis": {"allow": ["get_load"], "auth_method": "nothing", "use_session": False}},
        "ops":   {"apis": {"allow": "all", "auth_method": "header_phrase_sha256",
                           "header_phrase": "<sha256 hex>", "use_session": False}},
    }

A request is an *agent* (a program, no session) when it sends ``X-ChatStream-Auth-Header`` or
``X-FastSession-Skip: skip``; any other request is a *browser* and keeps its role in its session.
Phrases are compared in constant time (both sides hashed first) and are never logged.

``client_role_default`` (0.3's default: browsers may chat, clear their context and send feedback;
agents may call nothing but ``/health``) applies when no ``client_roles`` are given.
``client_role_chat_page`` adds the chat page's own files (what ``chatstream serve`` uses);
``client_role_free_access`` allows every API to everyone.

A role whose ``auth_method`` is missing, unknown or not one of its kind's (a browser role with a
header phrase, say) is kept but can never be obtained, and a warning names it: 0.3 accepted such
roles and then failed requests with an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass

from starlette.requests import Request

from ..exceptions import ConfigurationError
from .api import API_NAMES

logger = logging.getLogger("chatstream")

AUTH_HEADER = "X-ChatStream-Auth-Header"
SKIP_SESSION_HEADER = "X-FastSession-Skip"
SESSION_ROLE_KEY = "chat_stream_client_role"
BROWSER_METHODS = ("nothing", "ui_pass_phrase", "ui_pass_phrase_sha256")
AGENT_METHODS = ("nothing", "header_phrase", "header_phrase_sha256")

client_role_default: dict = {  # ChatStream 0.3's default
    "user": {"apis": {"allow": ["chat_stream", "clear_context", "set_feedback"], "auth_method": "nothing",
                      "use_session": True}},
}

client_role_chat_page: dict = {  # the default, plus the chat page's files (what `chatstream serve` uses)
    "user": {"apis": {"allow": ["chat_stream", "clear_context", "set_feedback", "webui_index", "webui_js",
                                "webui_css"], "auth_method": "nothing", "use_session": True}},
}

client_role_free_access: dict = {
    "user": {"apis": {"allow": "all", "auth_method": "nothing", "use_session": True}},
    "agent": {"apis": {"allow": "all", "auth_method": "nothing", "use_session": False}},
}


@dataclass(frozen=True)
class ClientRole:
    name: str
    allow: str | tuple[str, ...]  # "all" or API names, in the order given
    auth_method: str
    use_session: bool
    enable_dev_tool: bool = False
    phrase: str | None = None  # plain text, or a sha256 hex digest for the *_sha256 methods

    def allows(self, api_name: str) -> bool:
        return self.allow == "all" or api_name in self.allow

    def to_dict(self) -> dict:
        """The 0.3 client_role shape (without the phrase)."""
        allowed = self.allow if self.allow == "all" else list(self.allow)
        return {"client_role_name": self.name, "allowed_apis": allowed, "enable_dev_tool": self.enable_dev_tool}

    def __repr__(self) -> str:  # never show the phrase
        return f"ClientRole(name={self.name!r}, auth_method={self.auth_method!r})"


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def phrase_matches(given: str | None, role: ClientRole) -> bool:
    """Whether ``given`` is the role's phrase, in time independent of where they differ."""
    if given is None or role.phrase is None:
        return False
    if role.auth_method.endswith("_sha256"):
        return hmac.compare_digest(hashlib.sha256(given.encode("utf-8")).hexdigest(), role.phrase.lower())
    return hmac.compare_digest(_digest(given), _digest(role.phrase))


_PHRASE_KEYS = {  # where each method's phrase is (0.3 read the sha256 header phrase from "header_phrase")
    "ui_pass_phrase": ("ui_pass_phrase",),
    "ui_pass_phrase_sha256": ("ui_pass_phrase_sha256", "ui_pass_phrase"),
    "header_phrase": ("header_phrase",),
    "header_phrase_sha256": ("header_phrase_sha256", "header_phrase"),
}


def _is_sha256_hex(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


def _parse_role(name: object, definition: object) -> ClientRole:
    where = f"client_roles[{name!r}]"
    if not isinstance(name, str) or not isinstance(definition, dict) or not isinstance(definition.get("apis"), dict):
        raise ConfigurationError(f"{where} must be {{'apis': {{'allow': ..., 'auth_method': ...}}}}.")
    apis = definition["apis"]
    allow = apis.get("allow")
    if allow != "all":
        if not isinstance(allow, (list, tuple, set, frozenset)) or not all(isinstance(a, str) for a in allow):
            raise ConfigurationError(f"{where}['apis']['allow'] (={allow!r}) must be 'all' or a list of API names.")
        unknown = sorted(set(allow) - set(API_NAMES))
        if unknown:
            raise ConfigurationError(f"{where} allows unknown API(s) {unknown}; known APIs are {list(API_NAMES)}.")
        allow = tuple(dict.fromkeys(allow))
    use_session = bool(apis.get("use_session", False))
    method = apis.get("auth_method")
    enable_dev_tool = bool(apis.get("enable_dev_tool", False))
    allowed_methods = BROWSER_METHODS if use_session else AGENT_METHODS
    if method not in allowed_methods:  # never granted (0.3 accepted it, then raised on requests)
        kind = "browser (use_session=True)" if use_session else "agent (use_session=False)"
        logger.warning("%s has auth_method %r; a %s role uses one of %s. Nobody can get this role.",
                       where, method, kind, allowed_methods)
        return ClientRole(name, allow, str(method), use_session, enable_dev_tool)
    phrase = None
    if method != "nothing":
        keys = _PHRASE_KEYS[method]
        phrase = next((apis[k] for k in keys if k in apis), None)
        if not isinstance(phrase, str) or not phrase:
            raise ConfigurationError(f"{where} uses auth_method {method!r} but sets no non-empty {keys[0]!r}.")
        if method.endswith("_sha256") and not _is_sha256_hex(phrase):
            raise ConfigurationError(f"{where}[{keys[0]!r}] must be a sha256 hex digest (64 hex characters).")
    return ClientRole(name, allow, method, use_session, enable_dev_tool, phrase)


class ClientRoles:
    """Validated role definitions and the rules that give a request its role."""

    def __init__(self, client_roles: dict | None = None) -> None:
        if client_roles is None:
            client_roles = client_role_default
        if not isinstance(client_roles, dict) or not client_roles:
            raise ConfigurationError(
                f"`client_roles` (={client_roles!r}) must be a non-empty dict of role definitions.")
        self.definitions = client_roles  # as given (0.3's ClientRoleWrapper hands these out)
        self.roles = {name: _parse_role(name, definition) for name, definition in client_roles.items()}
        defaults = [r for r in self.roles.values() if r.use_session and r.auth_method == "nothing"]
        if len(defaults) != 1:
            raise ConfigurationError(
                f"`client_roles` needs exactly one browser default role (auth_method 'nothing', "
                f"use_session True); found {[r.name for r in defaults]}. See chatstream.client_role_default."
            )
        self.browser_default = defaults[0]
        agent_defaults = [r for r in self.roles.values() if not r.use_session and r.auth_method == "nothing"]
        self.agent_default = agent_defaults[0] if agent_defaults else None
        self._phrase_roles = [r for r in self.roles.values() if r.use_session and r.phrase]
        self._header_roles = [r for r in self.roles.values() if not r.use_session and r.phrase]

    @staticmethod
    def is_agent(request: Request) -> bool:
        headers = request.headers
        return AUTH_HEADER in headers or headers.get(SKIP_SESSION_HEADER, "").lower() == "skip"

    def special_roles(self, use_session: bool) -> list[ClientRole]:
        """The browser (``use_session``) or agent roles that are not a default, in definition order."""
        return [r for r in self.roles.values() if r.use_session == use_session and r.auth_method != "nothing"]

    def header_role(self, request: Request) -> ClientRole | None:
        """The agent role whose header phrase the request sends, if any."""
        given = request.headers.get(AUTH_HEADER)
        for role in self._header_roles:
            if phrase_matches(given, role):
                return role
        return None

    def agent_role(self, request: Request) -> ClientRole | None:
        """The header role, else the agent default (None: the agent may call nothing but /health)."""
        return self.header_role(request) or self.agent_default

    def browser_role(self, session_data: dict) -> ClientRole:
        """The role kept in the session, else the browser default. The session keeps the role's name, or
        0.3's ``{"client_role_name": ...}`` dict; either way the role's rights are the current definition's."""
        kept = session_data.get(SESSION_ROLE_KEY)
        name = kept.get("client_role_name") if isinstance(kept, dict) else kept
        role = self.roles.get(name) if isinstance(name, str) else None
        return role if role is not None and role.use_session else self.browser_default

    def role_for_phrase(self, user_input: str) -> ClientRole | None:
        """The browser role whose pass phrase is exactly ``user_input``, if any."""
        for role in self._phrase_roles:
            if phrase_matches(user_input, role):
                return role
        return None
