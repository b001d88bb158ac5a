"""The Web API names and paths, and ``append_apis`` / ``append_middlewares`` that put them on an app.

``append_apis(chat_stream, app, {"all": True})`` registers every endpoint; ``{"include": [...]}`` or
``{"exclude": [...]}`` pick (only one of the three, as in 0.3; with none of them nothing is added).
``web_ui_params`` is handed to the chat page. ``chat_stream`` may also be a function returning the
ChatStream or None while it is still loading; the endpoints then answer 503 until it exists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

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


class Route(NamedTuple):
    method: str
    path: str
    handler: str  # the ChatStream method


_N, _P = DefaultApiNames, DefaultApiPaths
# The one table of the APIs: name -> its routes. The 0.3 APIs (DefaultApiNames, governed by client roles)
# have one route each; the others ("openai", "metrics") are outside client roles: the OpenAI API is
# guarded by ChatStream's `api_key` (when set), not by the session cookie.
ROUTES: dict[str, tuple[Route, ...]] = {
    _N.CHAT_STREAM: (Route("POST", _P.CHAT_STREAM, "handle_chat_stream_request"),),
    _N.CLEAR_CONTEXT: (Route("POST", _P.CLEAR_CONTEXT, "handle_clear_context_request"),),
    _N.GET_PROMPT: (Route("GET", _P.GET_PROMPT, "handle_get_prompt_request"),),
    _N.SET_GENERATION_PARAMS: (Route("POST", _P.SET_GENERATION_PARAMS, "handle_set_generation_params_request"),),
    _N.GET_GENERATION_PARAMS: (Route("GET", _P.GET_GENERATION_PARAMS, "handle_get_generation_params_request"),),
    _N.GET_LOAD: (Route("GET", _P.GET_LOAD, "handle_get_load_request"),),
    _N.GET_RESOURCE_USAGE: (Route("GET", _P.GET_RESOURCE_USAGE, "handle_get_resource_usage_request"),),
    _N.SET_FEEDBACK: (Route("POST", _P.SET_FEEDBACK, "handle_set_feedback_request"),),
    _N.WEBUI_INDEX: (Route("GET", _P.INDEX, "index"),),
    _N.WEBUI_JS: (Route("GET", _P.JS, "js"),),
    _N.WEBUI_CSS: (Route("GET", _P.CSS, "css"),),
    _N.HEALTH: (Route("GET", _P.HEALTH, "handle_health_request"),),
    "openai": (Route("POST", "/v1/chat/completions", "handle_openai_chat_completions"),
               Route("GET", "/v1/models", "handle_openai_models")),
    "metrics": (Route("GET", "/metrics", "handle_metrics_request"),),
}
API_NAMES: tuple[str, ...] = tuple(value for key, value in vars(DefaultApiNames).items() if key.isupper())
API_ROUTES: dict[str, Route] = {name: ROUTES[name][0] for name in API_NAMES}  # the 0.3 APIs' one route each
API_METHODS = {name: route.method for name, route in API_ROUTES.items()}
EXTRA_APIS: tuple[str, ...] = tuple(name for name in ROUTES if name not in API_NAMES)
EXTRA_ROUTES = {name: ROUTES[name] for name in EXTRA_APIS}


def to_web_api_path(api_name: str) -> str:
    if api_name not in API_ROUTES:
        raise ValueError(f"Unknown API name {api_name!r}; known ones are {list(API_NAMES)}.")
    return API_ROUTES[api_name].path


def enabled_apis(opts: dict | None) -> list[str]:
    """Which APIs (0.3's, then the others) ``opts`` turns on (``include`` / ``exclude`` / ``all``, at most one)."""
    opts = opts or {}
    given = [key for key in ("include", "exclude", "all") if key in opts]
    if len(given) > 1:
        raise ValueError(f"only one of 'include', 'exclude' and 'all' may be given, got {given}.")
    for key in ("include", "exclude"):
        unknown = sorted(set(opts.get(key) or ()) - set(ROUTES))
        if unknown:
            raise ValueError(f"{key!r} names unknown API(s) {unknown}; known ones are {list(ROUTES)}.")
    if "include" in opts:
        return [name for name in ROUTES if name in opts["include"]]
    if "exclude" in opts:
        return [name for name in ROUTES if name not in opts["exclude"]]
    return list(ROUTES) if opts.get("all") else []


def enabled_api_names(opts: dict | None) -> list[str]:
    """Which of the 0.3 APIs ``opts`` turns on."""
    return [name for name in enabled_apis(opts) if name in API_ROUTES]


def _not_loaded() -> Response:
    return JSONResponse({"success": False, "error": "not_ready", "detail": "the model is still loading"},
                        status_code=503, headers={"Retry-After": "1"})


def _openai_not_loaded() -> Response:
    from .openai_protocol import not_ready

    return not_ready().response()


def _endpoint(get_chat_stream: Callable[[], Any], method_name: str, extra: dict,
              not_loaded: Callable[[], Response] = _not_loaded) -> Callable:
    async def endpoint(request: Request) -> Any:
        chat_stream = get_chat_stream()
        if chat_stream is None:
            return not_loaded()
        return await getattr(chat_stream, method_name)(request, **extra)

    endpoint.__name__ = method_name
    return endpoint


def append_apis(chat_stream: Any, app: Any, opts: dict | None = None) -> list[str]:
    """Register the enabled endpoints of ``chat_stream`` (a ChatStream, or a function returning it or None while
    it loads) on ``app`` (FastAPI or Starlette); returns their names."""
    if hasattr(chat_stream, "handle_chat_stream_request"):
        instance = chat_stream
        chat_stream = lambda: instance  # noqa: E731
    names = enabled_apis(opts)
    if not names:
        logger.warning("append_apis added no endpoint: pass {'all': True}, {'include': [...]} or {'exclude': [...]}.")
    for name in names:
        extra = {"opts": {"ui_init_params": (opts or {}).get("web_ui_params", {})}} if name == "webui_index" else {}
        for method, path, handler in ROUTES[name]:
            endpoint = _endpoint(chat_stream, handler, extra, _openai_not_loaded if name == "openai" else _not_loaded)
            in_schema = not name.startswith("webui") and name != "metrics"
            if hasattr(app, "add_api_route"):
                app.add_api_route(path, endpoint, methods=[method], include_in_schema=in_schema)
            else:
                app.add_route(path, endpoint, methods=[method])
            logger.debug("API endpoint %s %s added.", method, path)
    return names


def append_middlewares(chat_stream: Any, app: Any, opts: dict | None = None) -> None:
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
