"""The ChatStream endpoints besides the chat itself: context, generation parameters, prompt, load,
resource usage, feedback, health and the web UI (0.3 names and JSON shapes). A mixin of ChatStream."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ._http import NOSNIFF, PARAM_ALIASES, call_maybe_async, error_response, json_content_type_error
from ._webui import asset_response, check_ui_params, page_response
from .exceptions import ConfigurationError
from .generation import GenerationParams
from .request_handler import SUCCESS
from .resource_usage import get_resource_usage

if TYPE_CHECKING:
    from .chat_stream import ChatStream
    from .sessions import HttpSession

CLIENT_PARAMS = ("temperature", "top_k", "top_p", "repetition_penalty", "repetition_penalty_method",
                 "max_new_tokens", "seed", "stop_strings", "eos_token_ids")


class EndpointsMixin:
    """Handlers for the secondary APIs; each checks the caller's role first."""

    async def _browser_session(self: ChatStream, request: Request, api_name: str) -> HttpSession | Response:
        """The caller's session for an API that keeps something in it; a 403, or a 400 for agents."""
        auth = await self._authorize(request, api_name)
        if isinstance(auth, Response):
            return auth
        if auth[1] is None:
            return error_response(400, "no_session", self.eloc.t("no_session"))
        return auth[1]

    async def handle_clear_context_request(self: ChatStream, request: Request, request_body: Any = None,
                                           callback: Callable | None = None) -> Response:
        session = await self._browser_session(request, "clear_context")
        if isinstance(session, Response):
            return session
        body = await self._read_body(request, request_body if isinstance(request_body, (bytes, str)) else None)
        if isinstance(body, Response):
            return self._respond(session, body)
        wrong_type = json_content_type_error(request, body, self.eloc)
        if wrong_type is not None:
            return self._respond(session, wrong_type)
        if not session.is_new:  # a cookieless call has nothing to clear: it makes no session either
            async with self.sessions.lock(session.session_id):  # waits for a running turn of this session
                await session.remove("chat_prompt")
        if callback is not None:
            await call_maybe_async(callback, request, SUCCESS)
        return self._respond(session, JSONResponse({"success": True, "message": "Context successfully cleared"}))

    def _public_params(self: ChatStream, params: GenerationParams) -> dict:
        public = {key: getattr(params, key) for key in (*CLIENT_PARAMS, "context_len")}
        public.update(top_k_value=params.top_k, top_p_value=params.top_p)
        return public

    async def handle_set_generation_params_request(self: ChatStream, request: Request) -> Response:
        session = await self._browser_session(request, "set_generation_params")
        if isinstance(session, Response):
            return session
        data = await self._read_json(request)
        if isinstance(data, Response):
            return self._respond(session, data)
        changes = {PARAM_ALIASES.get(key, key): value for key, value in data.items()}
        unknown = sorted(set(changes) - set(CLIENT_PARAMS))
        overrides = dict(session.data.get("generation_params") or {})
        overrides.update(changes)
        overrides = {key: value for key, value in overrides.items() if value is not None}
        try:
            if unknown:
                raise ConfigurationError(f"unknown or server-only parameter(s) {unknown}; a client may set "
                                         f"{list(CLIENT_PARAMS)} (and the 0.3 names {list(PARAM_ALIASES)}).")
            params = self.generation_params.replace(**overrides)
            if params.max_new_tokens > self.generation_params.max_new_tokens:
                raise ConfigurationError(f"`max_new_tokens` (={params.max_new_tokens}) may not exceed the server's "
                                         f"{self.generation_params.max_new_tokens}.")
        except ConfigurationError as error:
            return self._respond(session, error_response(400, "bad_generation_params",
                                                         self.eloc.t("bad_generation_params", reason=str(error))))
        await session.update(generation_params=overrides)
        return self._respond(session, JSONResponse(
            {"success": True, "message": "success", "generation_params": self._public_params(params)}))

    async def handle_get_generation_params_request(self: ChatStream, request: Request) -> Response:
        auth = await self._authorize(request, "get_generation_params")
        if isinstance(auth, Response):
            return auth
        _, session = auth
        params = self._public_params(self.generation_params_for(session))
        body = {"success": True, "message": "success", "generation_params": params}
        return self._respond(session, JSONResponse(body))

    async def handle_get_prompt_request(self: ChatStream, request: Request) -> Response:
        auth = await self._authorize(request, "get_prompt")
        if isinstance(auth, Response):
            return auth
        _, session = auth
        prompt = self.prompt_in_session(session.data) if session is not None else None
        if prompt is None:
            return self._respond(session, JSONResponse({"success": True, "message": "no prompt", "prompt": None}))
        text = prompt.create_prompt()
        return self._respond(session, JSONResponse({"success": True, "message": "success",
                                                    "prompt": urllib.parse.quote(text), "history": prompt.to_dict()}))

    async def handle_get_load_request(self: ChatStream, request: Request) -> Response:
        auth = await self._authorize(request, "get_load")
        if isinstance(auth, Response):
            return auth
        stats = self.admission.stats()
        worker = {"name": self.name, "processing": stats["running"], "running": stats["running"],
                  "waiting": stats["waiting"], "max_processing": stats["max_running"],
                  "max_waiting": stats["max_waiting"], "ready": self._ready}
        return self._respond(auth[1], JSONResponse({"success": True, "message": "success",
                                                    "chatstream_workers": [worker]}))

    async def handle_get_resource_usage_request(self: ChatStream, request: Request) -> Response:
        auth = await self._authorize(request, "get_resource_usage")
        if isinstance(auth, Response):
            return auth
        usage = get_resource_usage(self.device, self.num_gpus)
        usage["name"] = self.name
        return self._respond(auth[1], JSONResponse({"success": True, "message": "success", "memory_usage": [usage]}))

    async def handle_set_feedback_request(self: ChatStream, request: Request, opts: dict | None = None) -> Response:
        """Accept ``{"message_id": str, ...}`` (like/dislike...) and pass it to ``opts["on_feedback_received"]``."""
        auth = await self._authorize(request, "set_feedback")
        if isinstance(auth, Response):
            return auth
        data = await self._read_json(request)
        if isinstance(data, Response):
            return self._respond(auth[1], data)
        if not isinstance(data.get("message_id"), str):
            return self._respond(auth[1], error_response(400, "bad_feedback", self.eloc.t("bad_feedback")))
        receiver = (opts or {}).get("on_feedback_received")
        if receiver is not None:
            await call_maybe_async(receiver, self._feedback_data(data, auth[1]))
        return self._respond(auth[1], JSONResponse({"success": True, "message": "success"}))

    def _feedback_data(self: ChatStream, data: dict, session: HttpSession | None) -> dict:
        """The client's feedback with 0.3's keys added: the answer it is about (``target_message``), the prompt
        up to that answer (``prompt``) and the session's generation parameters (None when not found)."""
        message_id = data["message_id"]
        prompt = self.prompt_in_session(session.data) if session is not None else None
        target = prompt.find_chat_content_by_message_id(message_id) if prompt is not None else None
        return {
            **data,
            "is_like": data.get("is_like", False),
            "form_data": data.get("form_data", ""),
            "target_message_id": message_id,
            "target_message": target.get_message() if target is not None else None,
            "prompt": prompt.create_prompt({"to_message_id": message_id}) if target is not None else None,
            "generation_params": self._public_params(self.generation_params_for(session)),
        }

    async def handle_health_request(self: ChatStream, request: Request | None = None) -> Response:
        """200 when ready to serve, 503 before ``start_queue_worker`` / after ``stop_queue_worker``."""
        body: dict[str, Any] = {"status": "ok" if self._ready else "starting", "name": self.name}
        if self.probe_recorder is not None:  # a failing recorder (full disk) shows here, it keeps what it has
            body["probe_recording"] = self.probe_recorder.stats
        return JSONResponse(body, status_code=200 if self._ready else 503, headers=NOSNIFF)

    # -- web UI ------------------------------------------------------------------------------------

    # index/js/css are awaitable in every case: given a Request they return a coroutine (the role is checked);
    # given none, as 0.3's examples call them (``chat_stream.index(response, opts=...)``, with or without
    # ``await``), they return the page at once as a ReadyResponse, which can also be awaited.

    def index(self: ChatStream, request: Any = None, response: Any = None, opts: dict | None = None) -> Any:
        """The chat page (0.3 called this with ``(request, response, opts)`` or ``(response, opts=...)``)."""
        ui_init_params = (opts or {}).get("ui_init_params")
        check_ui_params(ui_init_params, self.logger)
        return self._asset(request, "webui_index", lambda: page_response(ui_init_params))

    def js(self: ChatStream, request: Any = None, response: Any = None) -> Any:
        return self._asset(request, "webui_js", lambda: asset_response("chatstream.js"))

    def css(self: ChatStream, request: Any = None, response: Any = None) -> Any:
        return self._asset(request, "webui_css", lambda: asset_response("chatstream.css"))

    def _asset(self: ChatStream, request: Any, api_name: str, make: Callable[[], Response]) -> Any:
        if not isinstance(request, Request):
            return make()

        async def checked() -> Response:
            auth = await self._authorize(request, api_name)
            if isinstance(auth, Response):
                return auth
            return self._respond(auth[1], make())

        return checked()

