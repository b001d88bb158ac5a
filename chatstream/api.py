"""The Web API names and paths, and ``append_apis`` / ``append_middlewares`` that put them on an app.

``append_apis(chat_stream, app, {"all": True})`` registers every endpoint; ``{"include": [...]}`` or
``{"exclude": [...]}`` pick (only one of the three, as in 0.3; with none of them nothing is added).
``web_ui_params`` is handed to the chat page. ``chat_stream`` may also be a function returning the
ChatStream or None while it is still loading; the endpoints then answer 503 until it exists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

if TYPE_CHECKING:
    from .chat_stream import ChatStream

logger = logging.getLogger("chatstream")


class DefaultApiNames(NamedTuple):
    """API names (as used by client roles and by append_apis' include/exclude)."""

    CHAT_STREAM = "chat_stream"
    CLEAR_CONTEXT = "clear_context"
    GET_PROMPT = "get_prompt"
    SET_GENERATION_PARAMS = "set_generation_params"
    GET_GENERATION_PARAMS = "get_generation_params"
    GET_LOAD = "get_load"
    GET_RESOURCE_USAGE = "get_resource_usage"
    SET_FEEDBACK = "set_feedback"
    WEBUI_INDEX = "webui_index"
    WEBUI_JS = "webui_js"
    WEBUI_CSS = "webui_css"
    HEALTH = "health"


# name -> (HTTP method, path, ChatStream method)
API_ROUTES: dict[str, tuple[str, str, str]] = {
    "chat_stream": ("POST", "/chat_stream", "handle_chat_stream_request"),
    "clear_context": ("POST", "/clear_context", "handle_clear_context_request"),
    "get_prompt": ("GET", "/get_prompt", "handle_get_prompt_request"),
    "set_generation_params": ("POST", "/set_generation_params", "handle_set_generation_params_request"),
    "get_generation_params": ("GET", "/get_generation_params", "handle_get_generation_params_request"),
    "get_load": ("GET", "/get_load", "handle_get_load_request"),
    "get_resource_usage": ("GET", "/get_resource_usage", "handle_get_resource_usage_request"),
    "set_feedback": ("POST", "/set_feedback", "handle_set_feedback_request"),
    "webui_index": ("GET", "/", "index"),
    "webui_js": ("GET", "/chatstream.js", "js"),
    "webui_css": ("GET", "/chatstream.css", "css"),
    "health": ("GET", "/health", "handle_health_request"),
}
API_NAMES: tuple[str, ...] = tuple(API_ROUTES)
API_METHODS = {name: route[0] for name, route in API_ROUTES.items()}

# APIs beyond 0.3's, outside its names (client roles do not govern them): name -> [(method, path, ChatStream method)].
# `{"all": True}` adds them too; `include` adds the ones it names, `exclude` keeps out the ones it names.
# The OpenAI API is guarded by ChatStream's `api_key` (when set), not by the session cookie.
EXTRA_ROUTES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "openai": (("POST", "/v1/chat/completions", "handle_openai_chat_completions"),
               ("GET", "/v1/models", "handle_openai_models")),
    "metrics": (("GET", "/metrics", "handle_metrics_request"),),
}


class DefaultApiPaths(NamedTuple):
    """URL paths of the endpoints (0.3 names)."""

    GET_PROMPT = "/get_prompt"
    CHAT_STREAM = "/chat_stream"
    CLEAR_CONTEXT = "/clear_context"
    GET_LOAD = "/get_load"
    SET_GENERATION_PARAMS = "/set_generation_params"
    GET_GENERATION_PARAMS = "/get_generation_params"
    GET_RESOURCE_USAGE = "/get_resource_usage"
    SET_FEEDBACK = "/set_feedback"
    INDEX = "/"
    JS = "/chatstream.js"
    CSS = "/chatstream.css"
    HEALTH = "/health"


def to_web_api_path(api_name: str) -> str:
    if api_name not in API_ROUTES:
        raise ValueError(f"Unknown API name {api_name!r}; known ones are {list(API_NAMES)}.")
    return API_ROUTES[api_name][1]


def enabled_api_names(opts: dict | None) -> list[str]:
    """Which APIs ``opts`` turns on (``include`` / ``exclude`` / ``all``, at most one of them)."""
    opts = opts or {}
    given = [key for key in ("include", "exclude", "all") if key in opts]
    if len(given) > 1:
        raise ValueError(f"only one of 'include', 'exclude' and 'all' may be given, got {given}.")
    known = [*API_NAMES, *EXTRA_ROUTES]
    for key in ("include", "exclude"):
        unknown = sorted(set(opts.get(key) or ()) - set(known))
        if unknown:
            raise ValueError(f"{key!r} names unknown API(s) {unknown}; known ones are {known}.")
    if "include" in opts:
        return [name for name in API_NAMES if name in opts["include"]]
    if "exclude" in opts:
        return [name for name in API_NAMES if name not in opts["exclude"]]
    return list(API_NAMES) if opts.get("all") else []


def enabled_extra_apis(opts: dict | None) -> list[str]:
    """Which of ``EXTRA_ROUTES`` ``opts`` turns on (same rules as ``enabled_api_names``)."""
    opts = opts or {}
    if "include" in opts:
        return [name for name in EXTRA_ROUTES if name in opts["include"]]
    if "exclude" in opts:
        return [name for name in EXTRA_ROUTES if name not in opts["exclude"]]
    return list(EXTRA_ROUTES) if opts.get("all") else []


def _not_loaded() -> Response:
    return JSONResponse({"success": False, "error": "not_ready", "detail": "the model is still loading"},
                        status_code=503, headers={"Retry-After": "1"})


def _openai_not_loaded() -> Response:
    from .openai_protocol import not_ready

    return not_ready().response()


def _endpoint(get_chat_stream: Callable[[], ChatStream | None], method_name: str, extra: dict,
              not_loaded: Callable[[], Response] = _not_loaded) -> Callable:
    async def endpoint(request: Request) -> Any:
        chat_stream = get_chat_stream()
        if chat_stream is None:
            return not_loaded()
        return await getattr(chat_stream, method_name)(request, **extra)

    endpoint.__name__ = method_name
    return endpoint


def append_apis(
    chat_stream: ChatStream | Callable[[], ChatStream | None], app: Any, opts: dict | None = None
) -> list[str]:
    """Register the enabled endpoints on ``app`` (FastAPI or Starlette); returns their names."""
    if hasattr(chat_stream, "handle_chat_stream_request"):
        instance = chat_stream
        chat_stream = lambda: instance  # noqa: E731
    names = enabled_api_names(opts)
    extras = enabled_extra_apis(opts)
    if not names and not extras:
        logger.warning("append_apis added no endpoint: pass {'all': True}, {'include': [...]} or {'exclude': [...]}.")
    for name in names:
        method, path, handler = API_ROUTES[name]
        extra = {"opts": {"ui_init_params": (opts or {}).get("web_ui_params", {})}} if name == "webui_index" else {}
        endpoint = _endpoint(chat_stream, handler, extra)
        if hasattr(app, "add_api_route"):
            app.add_api_route(path, endpoint, methods=[method], include_in_schema=not name.startswith("webui"))
        else:
            app.add_route(path, endpoint, methods=[method])
        logger.debug("API endpoint %s %s added.", method, path)
    for name in extras:
        for method, path, handler in EXTRA_ROUTES[name]:
            endpoint = _endpoint(chat_stream, handler, {}, _openai_not_loaded if name == "openai" else _not_loaded)
            if hasattr(app, "add_api_route"):
                app.add_api_route(path, endpoint, methods=[method], include_in_schema=name != "metrics")
            else:
                app.add_route(path, endpoint, methods=[method])
    return [*names, *extras]


def append_middlewares(chat_stream: ChatStream, app: Any, opts: dict | None = None) -> None:
    """Configure sessions and, when asked, CORS (the 0.3 options are understood).

    ``opts``: ``{"fast_session": {"secret_key": str, "store": SessionStore, "secure": bool},
    "cors": {"allow_origins": [...]}, "develop_mode": bool}``. Sessions need no middleware (ChatStream
    opens them itself), so this only passes their settings on; ``develop_mode`` adds permissive CORS.
    """
    from .sessions import SessionStore

    opts = opts or {}
    session_opts = dict(opts.get("fast_session") or opts.get("session") or {})
    store = session_opts.get("store")
    if store is not None and not isinstance(store, SessionStore):
        logger.warning("ignoring session store %s: it is not a chatstream SessionStore; using memory.",
                       type(store).__name__)
        store = None
    chat_stream.sessions.configure(
        secret=session_opts.get("secret_key"), store=store, secure=session_opts.get("secure"))
    cors = opts.get("cors")
    if cors is None and opts.get("develop_mode"):
        cors = {"allow_origins": ["*"]}
    if cors is not None:
        origins = list(cors.get("allow_origins", ["*"]))
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials="*" not in origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-ChatStream-API-DevTool-Enabled", "X-ChatStream-Last-Generated-Message-Id"],
        )
        logger.warning("CORS middleware added for origins %s; do not allow '*' in production.", origins)
