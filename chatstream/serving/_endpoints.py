"""The ChatStream endpoints besides the chat itself: context, generation parameters, prompt, load,
resource usage, feedback, health and the web UI (0.3 names and JSON shapes). A mixin of ChatStream.

Each endpoint is wrapped in ``authorized(api_name)``, the one authorisation step: the caller's role and
session (``self.gate``), or the 403; the endpoint gets the ``Caller`` and its response gets the session
cookie. The mixin reads these attributes of its host: ``gate``, ``sessions``, ``eloc``, ``logger``,
``admission``, ``generation_params``, ``generation_params_for``, ``prompt_in_session``, ``name``, ``device``,
``num_gpus``, ``probe_recorder``, ``max_request_body_bytes``, ``is_ready``.
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..engine.generation import GenerationParams
from ..exceptions import ConfigurationError, SessionStoreError, SessionStoreUnavailable
from ._http import (
    NOSNIFF,
    PARAM_ALIASES,
    call_maybe_async,
    error_response,
    json_content_type_error,
    parse_json_object,
    read_body,
)
from ._webui import asset_response, check_ui_params, page_response
from .authorization import Caller
from .metrics import Outcome
from .resource_usage import get_resource_usage

CLIENT_PARAMS = ("temperature", "top_k", "top_p", "repetition_penalty", "repetition_penalty_method",
                 "max_new_tokens", "seed", "stop_strings", "eos_token_ids")

Endpoint = Callable[..., Awaitable[Response]]


def authorized(api_name: str, browser_only: bool = False) -> Callable[[Endpoint], Endpoint]:
    """Run the endpoint for an authorised caller only (``browser_only``: one with a session, else a 400)."""

    def wrap(method: Endpoint) -> Endpoint:
        @functools.wraps(method)
        async def endpoint(self: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
            try:
                caller = await self.gate.authorize(request, api_name)
                if isinstance(caller, Response):
                    return caller
                if browser_only and caller.session is None:
                    return caller.respond(error_response(400, "no_session", self.eloc.t("no_session")))
                return caller.respond(await method(self, request, caller, *args, **kwargs))
            except SessionStoreUnavailable as error:  # raised before a byte was sent: nothing half-written
                self.logger.warning("session store unavailable: %s", error)
                return error_response(503, "session_store_unavailable", self.eloc.t("store_unavailable"),
                                      {"Retry-After": str(max(1, self.retry_after_sec))})

        return endpoint

    return wrap


class EndpointsMixin:
    """Handlers for the secondary APIs; each is ``authorized`` for its API name."""

    async def _read_body(self, request: Request, given: bytes | str | None = None) -> bytes | str | Response:
        """The body (``given``, or read from the request), or a 413 when it is over the size limit."""
        body = given if given is not None else await read_body(request, self.max_request_body_bytes)
        if body is None or len(body) > self.max_request_body_bytes:
            return error_response(413, "body_too_large", self.eloc.t("body_too_large",
                                                                     limit=self.max_request_body_bytes))
        return body

    async def _read_json(self, request: Request) -> dict | Response:
        body = await self._read_body(request)
        if isinstance(body, Response):
            return body
        return json_content_type_error(request, body, self.eloc) or parse_json_object(body or b"{}", self.eloc)

    @authorized("clear_context", browser_only=True)
    async def handle_clear_context_request(self, request: Request, caller: Caller, request_body: Any = None,
                                           callback: Callable | None = None) -> Response:
        session = caller.session
        body = await self._read_body(request, request_body if isinstance(request_body, (bytes, str)) else None)
        if isinstance(body, Response):
            return body
        wrong_type = json_content_type_error(request, body, self.eloc)
        if wrong_type is not None:
            return wrong_type
        if not session.is_new:  # a cookieless call has nothing to clear: it makes no session either
            async with self.sessions.lock(session.session_id):  # waits for a running turn of this session
                await session.remove("chat_prompt")
        if callback is not None:
            await call_maybe_async(callback, request, Outcome.SUCCESS.value)
        return JSONResponse({"success": True, "message": "Context successfully cleared"})

    def _public_params(self, params: GenerationParams) -> dict:
        public = {key: getattr(params, key) for key in (*CLIENT_PARAMS, "context_len")}
        public.update(top_k_value=params.top_k, top_p_value=params.top_p)
        return public

    @authorized("set_generation_params", browser_only=True)
    async def handle_set_generation_params_request(self, request: Request, caller: Caller) -> Response:
        session = caller.session
        data = await self._read_json(request)
        if isinstance(data, Response):
            return data
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
            return error_response(400, "bad_generation_params", self.eloc.t("bad_generation_params",
                                                                            reason=str(error)))
        await session.update(generation_params=overrides)
        return JSONResponse({"success": True, "message": "success", "generation_params": self._public_params(params)})

    @authorized("get_generation_params")
    async def handle_get_generation_params_request(self, request: Request, caller: Caller) -> Response:
        params = self._public_params(self.generation_params_for(caller.session))
        return JSONResponse({"success": True, "message": "success", "generation_params": params})

    @authorized("get_prompt")
    async def handle_get_prompt_request(self, request: Request, caller: Caller) -> Response:
        prompt = self.prompt_in_session(caller.session.data) if caller.session is not None else None
        if prompt is None:
            return JSONResponse({"success": True, "message": "no prompt", "prompt": None})
        text = prompt.create_prompt()
        return JSONResponse({"success": True, "message": "success", "prompt": urllib.parse.quote(text),
                             "history": prompt.to_dict()})

    @authorized("get_load")
    async def handle_get_load_request(self, request: Request, caller: Caller) -> Response:
        stats = self.admission.stats()
        worker = {"name": self.name, "replica": self.replica_name, "processing": stats["running"],
                  "running": stats["running"],
                  "waiting": stats["waiting"], "max_processing": stats["max_running"],
                  "max_waiting": stats["max_waiting"], "ready": self.is_ready}
        return JSONResponse({"success": True, "message": "success", "chatstream_workers": [worker]})

    @authorized("get_resource_usage")
    async def handle_get_resource_usage_request(self, request: Request, caller: Caller) -> Response:
        usage = get_resource_usage(self.device, self.num_gpus)
        usage["name"] = self.name
        return JSONResponse({"success": True, "message": "success", "memory_usage": [usage]})

    @authorized("set_feedback")
    async def handle_set_feedback_request(self, request: Request, caller: Caller, opts: dict | None = None
                                          ) -> Response:
        """Accept ``{"message_id": str, ...}`` (like/dislike...) and pass it to ``opts["on_feedback_received"]``."""
        data = await self._read_json(request)
        if isinstance(data, Response):
            return data
        if not isinstance(data.get("message_id"), str):
            return error_response(400, "bad_feedback", self.eloc.t("bad_feedback"))
        receiver = (opts or {}).get("on_feedback_received")
        if receiver is not None:
            await call_maybe_async(receiver, self._feedback_data(data, caller.session))
        return JSONResponse({"success": True, "message": "success"})

    def _feedback_data(self, data: dict, session: Any) -> dict:
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

    async def handle_health_request(self, request: Request | None = None) -> Response:
        """200 when ready to serve; 503 before ``start_queue_worker`` / after ``stop_queue_worker``, and while
        the session store cannot be reached (``session_store.ok`` false, the error without any password)."""
        body: dict[str, Any] = {"status": "ok" if self.is_ready else "starting", "name": self.name,
                                "replica": self.replica_name}
        if self.probe_recorder is not None:  # a failing recorder (full disk) shows here, it keeps what it has
            body["probe_recording"] = self.probe_recorder.stats
        store = self.sessions.store
        body["session_store"] = {"store": store.describe(), "ok": True}
        try:
            await store.check()
        except SessionStoreError as error:
            body["session_store"].update(ok=False, error=str(error))
            if self.is_ready:
                body["status"] = "session_store_unavailable"
        ok = body["status"] == "ok"
        return JSONResponse(body, status_code=200 if ok else 503, headers=NOSNIFF)

    # -- web UI ------------------------------------------------------------------------------------

    # index/js/css are awaitable in every case: given a Request they return a coroutine (the role is checked);
    # given none, as 0.3's examples call them (``chat_stream.index(response, opts=...)``, with or without
    # ``await``), they return the page at once as a ReadyResponse, which can also be awaited.

    def index(self, request: Any = None, response: Any = None, opts: dict | None = None) -> Any:
        """The chat page (0.3 called this with ``(request, response, opts)`` or ``(response, opts=...)``)."""
        ui_init_params = (opts or {}).get("ui_init_params")
        check_ui_params(ui_init_params, self.logger)
        return self._asset(request, "webui_index", lambda: page_response(ui_init_params))

    def js(self, request: Any = None, response: Any = None) -> Any:
        return self._asset(request, "webui_js", lambda: asset_response("chatstream.js"))

    def css(self, request: Any = None, response: Any = None) -> Any:
        return self._asset(request, "webui_css", lambda: asset_response("chatstream.css"))

    def _asset(self, request: Any, api_name: str, make: Callable[[], Response]) -> Any:
        if not isinstance(request, Request):
            return make()

        @authorized(api_name)
        async def checked(self: Any, request: Request, caller: Caller) -> Response:
            return make()

        return checked(self, request)

