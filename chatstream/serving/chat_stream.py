"""ChatStream: the class a FastAPI app embeds to stream chat answers under load control.

    chat_stream = ChatStream(model=model, tokenizer=tokenizer, device="cuda")
    app = FastAPI(lifespan=chat_stream.lifespan)          # or the 0.3 startup hook, see README
    chat_stream.append_apis(app, {"all": True})            # or your own routes calling the handlers

A chat request is checked (role, body, JSON) and admitted or refused before the first byte is sent:
4xx, 429 with ``Retry-After`` (``too_many_request_as_http_error=True``) or the 0.3 in-band
``{"error": "too_many_requests"}``. Admitted requests run in arrival order, at most
``num_of_concurrent_executions`` at once; a client that leaves while queued or streaming frees its
place at once. The model runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..engine.chat_prompt import AbstractChatPrompt, ChatPromptFromTemplate
from ..engine.chat_prompt_presets import ChatPromptChatML
from ..engine.device import resolve_device
from ..engine.generation import ChatGenerator, GenerationParams
from ..engine.mock_generator import ChatGeneratorMock
from ..engine.token_sampler import TokenSampler, TokenSamplerIsok
from ..exceptions import ConfigurationError
from . import api as _api
from . import extra_attributes, startup_heap
from ._endpoints import EndpointsMixin
from ._http import DEFAULT_MAX_BODY_BYTES, DEFAULT_SEND_TIMEOUT_SEC, FINISH_TOKEN, bearer_matches, error_response
from .admission import Admission
from .authorization import Gate
from .client_roles import SESSION_ROLE_KEY, ClientRole, ClientRoles
from .locale import Locale
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics, Outcome, source_of
from .openai_serving import OpenAIServing, ServingContext, served_model_name
from .sessions import HttpSession, SessionManager, SessionStore, browser_session_data
from .turn import (
    NO_FLUSH,
    AbstractRequestHandler,
    ChatTurns,
    SimpleSessionRequestHandler,
    TurnContext,
    TurnSettings,
    console_turn,
)

DEFAULT_FINISH_TOKEN = FINISH_TOKEN
DEFAULT_MAX_HISTORY_TURNS = 100  # user/assistant pairs kept in a session; older ones are dropped


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"`{name}` (={value!r}) must be an integer >= {minimum}.")
    return value


def default_replica_name() -> str:
    """``hostname:pid``: what tells replicas apart in /health, /get_load and /metrics by default."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _default_logger() -> logging.Logger:
    logger = logging.getLogger("chatstream")
    if not logger.handlers and not logging.getLogger().handlers:  # logging not configured: show warnings
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s [%(name)s][%(levelname)s] %(message)s"))
        logger.addHandler(handler)
    return logger


class ChatStream(EndpointsMixin):
    """Streams a causal LM's chat answers to HTTP clients under load control (the 0.3 surface)."""

    def __init__(
        self,
        name: str = "node:0",
        model: Any = None,
        tokenizer: Any = None,
        num_gpus: int | None = None,
        device: Any = None,
        num_of_concurrent_executions: int = 2,
        max_queue_size: int = 5,
        too_many_request_as_http_error: bool = False,
        use_mock_response: bool = False,
        mock_params: dict | None = None,
        chat_prompt_clazz: type[AbstractChatPrompt] | None = None,
        max_new_tokens: int = GenerationParams.max_new_tokens,  # every generation default: GenerationParams'
        context_len: int = GenerationParams.context_len,
        temperature: float = GenerationParams.temperature,
        top_k: int | None = GenerationParams.top_k,
        top_p: float | None = GenerationParams.top_p,
        repetition_penalty: float | None = GenerationParams.repetition_penalty,
        repetition_penalty_method: str = GenerationParams.repetition_penalty_method,
        add_special_tokens: bool | None = GenerationParams.add_special_tokens,
        request_handler: AbstractRequestHandler | None = None,
        logger: logging.Logger | None = None,
        locale: str | None = None,
        client_roles: dict | None = None,
        token_sampler: TokenSampler | None = None,
        seed: int | None = GenerationParams.seed,
        probe_mode_enabled: bool = False,
        *,
        probe_dir: Any = None,
        probe_name: str | None = None,
        probe_fidelity: Any = None,
        chat_generator: Any = None,
        session_secret: str | bytes | None = None,
        session_store: SessionStore | str | None = None,
        session_cookie_secure: bool = False,
        max_request_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        retry_after_sec: int = 1,
        stop_strings: list[str] | tuple[str, ...] = GenerationParams.stop_strings,
        eos_token_ids: list[int] | tuple[int, ...] = GenerationParams.eos_token_ids,
        mock_type: str | None = None,
        batching: bool | None = None,
        send_timeout_sec: float | None = DEFAULT_SEND_TIMEOUT_SEC,
        max_history_turns: int | None = DEFAULT_MAX_HISTORY_TURNS,
        api_key: str | None = None,
        model_name: str | None = None,
        metrics_key: str | None = None,
        replica_name: str | None = None,
        prefix_cache_mb: float | None = None,
    ) -> None:
        self.eloc = Locale(locale)
        self.logger = logger or _default_logger()
        if mock_type is not None:  # 0.3's console_chat_mock.py passes mock_type="round"
            mock_params = {**(mock_params or {}), "type": mock_type}
        self.name = name
        if replica_name is not None and (not isinstance(replica_name, str) or not replica_name):
            raise ConfigurationError(f"`replica_name` (={replica_name!r}) must be a non-empty string, or None for "
                                     "hostname:pid.")
        self.replica_name = replica_name or default_replica_name()
        self.admission = Admission(num_of_concurrent_executions, max_queue_size)
        self.too_many_request_as_http_error = bool(too_many_request_as_http_error)
        self.generation_params = GenerationParams(
            max_new_tokens=max_new_tokens, context_len=context_len, temperature=temperature, top_k=top_k,
            top_p=top_p, repetition_penalty=repetition_penalty, repetition_penalty_method=repetition_penalty_method,
            add_special_tokens=add_special_tokens, seed=seed, stop_strings=stop_strings,
            eos_token_ids=eos_token_ids)
        self.device = resolve_device(device, num_gpus) if device is not None else None
        self.num_gpus = num_gpus
        self.max_request_body_bytes = _check_int("max_request_body_bytes", max_request_body_bytes, 1)
        self.retry_after_sec = _check_int("retry_after_sec", retry_after_sec, 0)
        if send_timeout_sec is not None and (isinstance(send_timeout_sec, bool) or not isinstance(
                send_timeout_sec, (int, float)) or not 0 < send_timeout_sec < float("inf")):
            raise ConfigurationError(f"`send_timeout_sec` (={send_timeout_sec!r}) must be a number of seconds > 0 "
                                     "(how long one chunk may wait for a client that stopped reading), or None.")
        self.send_timeout_sec = send_timeout_sec
        self.max_history_turns = (None if max_history_turns is None
                                  else _check_int("max_history_turns", max_history_turns, 1))
        self.model, self.tokenizer = model, tokenizer
        if token_sampler is not None and not callable(getattr(token_sampler, "sample", None)):
            raise ConfigurationError(f"`token_sampler` must be a chatstream.TokenSampler (with a sample() method), "
                                     f"got {type(token_sampler).__name__}; or None for TokenSamplerIsok.")
        if chat_generator is not None and not callable(getattr(chat_generator, "stream", None)):
            raise ConfigurationError(f"`chat_generator` must have a stream(chat_prompt, params, should_stop) method "
                                     f"like chatstream.ChatGenerator, got {type(chat_generator).__name__}.")
        self.token_sampler = token_sampler or TokenSamplerIsok(seed=seed)
        self.probe_recorder: Any = None
        if probe_mode_enabled:
            if use_mock_response or chat_generator is not None:
                raise ConfigurationError("probe_mode_enabled records a real model; it cannot be combined with "
                                         "use_mock_response or chat_generator.")
            from ..cassettes.probe import start_probe

            if probe_name is None and replica_name is not None:  # replicas record side by side (a replay set)
                probe_name = re.sub(r"[^A-Za-z0-9._-]", "-", replica_name)
            self.model, self.tokenizer, self.token_sampler, self.probe_recorder = start_probe(
                model, tokenizer, self.token_sampler, parent_dir=probe_dir, name=probe_name,
                fidelity=probe_fidelity, sampling=self.generation_params.to_dict())
        if batching not in (True, False, None):
            raise ConfigurationError(f"`batching` (={batching!r}) must be None (batch when the model allows it), "
                                     "True or False.")
        if batching is None:  # batch concurrent streams whenever the model allows it (docs/batching.md)
            batching = self._can_batch(use_mock_response, chat_generator)
        if batching and (use_mock_response or chat_generator is not None):
            raise ConfigurationError("batching=True batches the forwards of `model`; it cannot be combined with "
                                     "use_mock_response or chat_generator.")
        self._batched: Any = None
        self._no_model: str | None = None  # why this ChatStream cannot generate, when built without a model
        if chat_generator is not None:
            self.chat_generator = chat_generator
        elif batching:  # one scheduler batches every running stream's decode step (docs/batching.md)
            from ..engine.batched_generator import BatchedChatGenerator

            self.chat_generator = BatchedChatGenerator(self.model, self.tokenizer, device, self.generation_params,
                                                       self.token_sampler, num_gpus,
                                                       capacity=self.admission.max_running,
                                                       prefix_cache_mb=prefix_cache_mb)
            self._batched = self.chat_generator
            self.device = self.chat_generator.device
        elif model is None and tokenizer is None and not use_mock_response:
            # 0.3 built a ChatStream with no model (its role tests do); it fails when it is started instead
            self.chat_generator = None
            self._no_model = ("ChatStream was built without a model: pass model= and tokenizer=, or use the "
                              "generator mock (use_mock_response=True) to run without a model.")
        elif use_mock_response:
            self.chat_generator = ChatGeneratorMock(
                params=mock_params if mock_params is not None else {"type": "round"},
                generation_params=self.generation_params)
        else:
            self.chat_generator = ChatGenerator(self.model, self.tokenizer, device, self.generation_params,
                                                self.token_sampler, num_gpus, prefix_cache_mb=prefix_cache_mb)
            self.device = self.chat_generator.device
        self.chat_prompt_clazz = chat_prompt_clazz
        self._prompt_factory, self._prompt_kwargs = self._prompt_class(chat_prompt_clazz)
        self.new_chat_prompt()  # fail now, not on the first request, when the class cannot be built
        self.sessions = SessionManager(session_store, session_secret, secure=session_cookie_secure,
                                       logger=self.logger, random_secret_warning=self.eloc.t("random_secret"))
        self.gate = Gate(None, self.sessions, self.eloc, self.logger)
        self.set_client_roles(client_roles)
        self._ready = False
        self._holds_heap = False  # whether this ChatStream holds the start-up heap freeze (startup_heap)
        self.metrics = Metrics(source_of(self.chat_generator), running=lambda: self.admission.running,
                               waiting=lambda: self.admission.waiting, replica=self.replica_name,
                               prefix_cache=getattr(self.chat_generator, "prefix_cache", None))
        self.request_handler = request_handler if request_handler is not None else SimpleSessionRequestHandler()
        self.turn_context = TurnContext(
            sessions=self.sessions, generator=self.chat_generator, params_for=self.generation_params_for,
            limiter=self.thread_limiter, locale=self.eloc, new_prompt=self.new_chat_prompt,
            prompt_from_dict=self.chat_prompt_from_dict, max_history_turns=self.max_history_turns, logger=self.logger)
        self.turns = ChatTurns(
            self.turn_context, self.gate, self.admission, self.request_handler, self.metrics, lambda: self._ready,
            TurnSettings(self.max_request_body_bytes, self.retry_after_sec, self.too_many_request_as_http_error,
                         self.send_timeout_sec),
            flush=self.probe_recorder.flush if self.probe_recorder is not None else None)
        self.openai = OpenAIServing(self._openai_context(api_key, model_name))
        if metrics_key is not None and (not isinstance(metrics_key, str) or not metrics_key):
            raise ConfigurationError(f"`metrics_key` (={metrics_key!r}) must be a non-empty string (pass api_key's "
                                     "value to guard /metrics with the API key), or None to leave /metrics open.")
        self.metrics_key = metrics_key
        self.queue_worker_task: asyncio.Task | None = None  # 0.3 attribute; no worker task is needed now
        self._limiter: tuple[Any, anyio.CapacityLimiter] | None = None
        self.chat_prompt_for_single_user_on_console: AbstractChatPrompt | None = None

    # -- construction helpers ----------------------------------------------------------------------

    def _can_batch(self, use_mock_response: bool, chat_generator: Any) -> bool:
        """Whether this ChatStream's model can be served by the batching engine; says why not when it cannot."""
        if use_mock_response or chat_generator is not None or self.model is None or self.tokenizer is None:
            return False
        from ..engine._batch_cache import batching_unsupported

        reason = batching_unsupported(self.model)
        if reason is not None:
            self.logger.info("serving without continuous batching, one decode loop per stream: %s", reason)
        return reason is None

    def _prompt_class(self, clazz: Any) -> tuple[Callable[..., AbstractChatPrompt], dict]:
        if clazz is None:
            if self.tokenizer is None:
                return ChatPromptChatML, {}
            clazz = ChatPromptFromTemplate
        if not isinstance(clazz, type) or not issubclass(clazz, AbstractChatPrompt):
            raise ConfigurationError(f"`chat_prompt_clazz` (={clazz!r}) must be a subclass of AbstractChatPrompt "
                                     "(see chatstream.chat_prompt_presets), or None to use the tokenizer's template.")
        kwargs = {"tokenizer": self.tokenizer} if issubclass(clazz, ChatPromptFromTemplate) else {}
        return clazz, kwargs

    def set_client_roles(self, client_roles: dict | None) -> None:
        """Use these role definitions (checked first); None: 0.3's default, ``chatstream.client_role_default``."""
        self.client_roles = ClientRoles(client_roles)
        self.client_roles_given = client_roles is not None
        for name in extra_attributes.FACTORIES:  # 0.3's client_role_wrapper and verifier follow the new roles
            self.__dict__.pop(name, None)
        self.gate.client_roles = self.client_roles  # the chat turn and the endpoints follow the new roles

    @property
    def params(self) -> dict:
        """The server's generation parameters as a dict (0.3's ``chat_stream.params``, 0.3 names included)."""
        params = self.generation_params.to_dict()
        params.update(top_k_value=params["top_k"], top_p_value=params["top_p"])
        return params

    def new_chat_prompt(self) -> AbstractChatPrompt:
        """A new conversation: the prompt class built, then its ``build_initial_prompt`` (as 0.3 did)."""
        prompt = self._prompt_factory(**self._prompt_kwargs)
        prompt.build_initial_prompt(prompt)
        return prompt

    def chat_prompt_from_dict(self, data: dict) -> AbstractChatPrompt:
        return self._prompt_factory.from_dict(data, **self._prompt_kwargs)

    def prompt_in_session(self, session_data: dict) -> AbstractChatPrompt | None:
        """The chat prompt kept in a session (live, or rebuilt from its saved JSON), or None."""
        return self.turn_context.prompt_in_session(session_data)

    def thread_limiter(self) -> anyio.CapacityLimiter:
        """The worker threads generations run in (one per running slot), made per event loop."""
        loop = asyncio.get_running_loop()
        if self._limiter is None or self._limiter[0] is not loop:
            self._limiter = (loop, anyio.CapacityLimiter(self.admission.max_running))
        return self._limiter[1]

    def generation_params_for(self, session: HttpSession | None) -> GenerationParams:
        """The server's parameters with the session's overrides applied."""
        overrides = (session.data.get("generation_params") if session is not None else None) or {}
        return self.generation_params.replace(**overrides) if overrides else self.generation_params

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def is_ready(self) -> bool:
        return self._ready

    async def start_queue_worker(self) -> None:
        """Mark this ChatStream ready to serve (the 0.3 startup call). No worker task or signal handler is
        needed: admission happens in the request itself."""
        self._check_can_generate()
        self._ready = True
        self._hold_heap()
        self.logger.debug("ChatStream %s ready", self.name)

    async def queue_worker(self) -> None:
        """0.3's queue worker coroutine, for apps that run it themselves (``asyncio.create_task(
        chat_stream.queue_worker())``): admission now happens in each request, so it marks ChatStream
        ready and waits until it is cancelled, which stops taking chat requests (503) again."""
        self._check_can_generate()
        self._ready = True
        self._hold_heap()
        try:
            await asyncio.Event().wait()
        finally:
            self._ready = False
            self._release_heap()

    def _hold_heap(self) -> None:
        """Freeze the start-up heap while this ChatStream serves (``startup_heap``), once per start."""
        if not self._holds_heap:
            startup_heap.hold()
            self._holds_heap = True

    def _release_heap(self) -> None:
        if self._holds_heap:
            self._holds_heap = False
            startup_heap.release()

    def _check_can_generate(self) -> None:
        if self._no_model is not None:
            raise ConfigurationError(self._no_model)

    async def stop_queue_worker(self) -> None:
        """Stop taking chat requests (503), close the probe recorder, if any, and the session store's connections."""
        self._ready = False
        self._release_heap()
        self.close()
        try:
            await self.sessions.store.aclose()
        except Exception:  # closing is best effort: the store may be down
            self.logger.warning("the session store did not close cleanly", exc_info=True)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """``FastAPI(lifespan=chat_stream.lifespan)`` or ``async with chat_stream.lifespan(): ...``."""
        await self.start_queue_worker()
        try:
            yield
        finally:
            await self.stop_queue_worker()

    def close(self) -> None:
        if self._batched is not None:
            self._batched.close()
        if self.probe_recorder is not None:
            self.probe_recorder.close()

    # -- requests ------------------------------------------------------------------------------------

    def request_role(self, request: Request) -> ClientRole | None:
        """The role ``request`` has now: an agent's (its header phrase's, else the agent default, else None), or
        a browser's (the one kept in its session, else the browser default)."""
        if ClientRoles.is_agent(request):
            return self.client_roles.agent_role(request)
        return self.client_roles.browser_role(browser_session_data(request, self.sessions) or {})

    def __getattr__(self, name: str) -> Any:
        """ChatStream 0.3's ``client_role_wrapper`` and ``client_role_verifier``, made on first use by the 0.3
        home (``chatstream.compat03``, see ``serving.extra_attributes``)."""
        if name.startswith("__"):
            raise AttributeError(name)
        value = extra_attributes.make(self, name)
        self.__dict__[name] = value
        return value

    def verify_role_for_api(self, request: Request, api_name: str) -> Response | None:
        """0.3's role check for custom endpoints: None when the caller's role may call ``api_name``, else a
        403 JSON response (0.3's body). A browser is judged by the role in the session opened for this
        request (by ChatStream or by the app's session middleware), else by the default browser role. An
        ``api_name`` that is not one of ``chatstream.serving.api.API_NAMES`` is refused, as in 0.3."""
        role = self.request_role(request)
        if not hasattr(request.state, "__chatstream__"):
            request.state.__chatstream__ = {}
        request.state.__chatstream__[SESSION_ROLE_KEY] = role.to_dict() if role is not None else None
        if api_name in _api.API_NAMES and role is not None and role.allows(api_name):
            return None
        return JSONResponse({"success": False, "message": "Forbidden", "detail": "Denied on role layer."},
                            status_code=403)

    async def handle_chat_stream_request(self, request: Request, request_body: bytes | str | None = None,
                                         callback: Callable | None = None) -> Response:
        """Answer ``{"user_input": str, "regenerate": bool}`` with a text/plain stream (see serving.turn)."""
        return await self.turns.handle(request, request_body, callback)

    handle_starlette_request = handle_chat_stream_request  # the 0.2 name

    async def handle_console_input(self, user_input: str) -> AsyncIterator[tuple[str, str, str]]:
        """0.3 console chat: yields ``(response_text, updated_text, pos)``; one conversation per ChatStream."""
        self._check_can_generate()
        if self.chat_prompt_for_single_user_on_console is None:
            self.chat_prompt_for_single_user_on_console = self.new_chat_prompt()
        turn = console_turn(self.chat_generator, self.chat_prompt_for_single_user_on_console, user_input,
                            self.generation_params)
        async with contextlib.aclosing(turn):
            async for item in turn:
                yield item

    # -- the OpenAI-compatible API and metrics ---------------------------------------------------------

    def _openai_context(self, api_key: str | None, model_name: str | None) -> ServingContext:
        if api_key is not None and (not isinstance(api_key, str) or not api_key):
            raise ConfigurationError(f"`api_key` (={api_key!r}) must be a non-empty string, or None for no key.")
        if model_name is not None and (not isinstance(model_name, str) or not model_name):
            raise ConfigurationError(f"`model_name` (={model_name!r}) must be a non-empty string, or None for the "
                                     "model directory's name.")

        async def flush(outcome: Outcome) -> None:
            if self.probe_recorder is not None and outcome not in NO_FLUSH:
                await anyio.to_thread.run_sync(self.probe_recorder.flush)

        return ServingContext(
            generator=self.chat_generator, admission=self.admission, limiter=self.thread_limiter,
            params=lambda: self.generation_params, new_prompt=self.new_chat_prompt, metrics=self.metrics,
            is_ready=lambda: self._ready, model_name=model_name or served_model_name(self.tokenizer, "chatstream"),
            api_key=api_key, retry_after_sec=self.retry_after_sec, max_body_bytes=self.max_request_body_bytes,
            logger=self.logger, on_finished=flush)

    async def handle_openai_chat_completions(self, request: Request) -> Response:
        """``POST /v1/chat/completions`` (see chatstream.serving.openai_serving)."""
        return await self.openai.chat_completions(request)

    async def handle_openai_models(self, request: Request) -> Response:
        """``GET /v1/models``: the one model this ChatStream serves."""
        return await self.openai.models(request)

    async def handle_metrics_request(self, request: Request | None = None) -> Response:
        """``GET /metrics``: this ChatStream's Prometheus metrics (text exposition format); with ``metrics_key``,
        only for requests that send it as ``Authorization: Bearer KEY`` (else 401)."""
        if self.metrics_key is not None and (request is None or not bearer_matches(request, self.metrics_key)):
            return error_response(401, "unauthorized", "GET /metrics needs the metrics key, sent as "
                                  "`Authorization: Bearer KEY`.", headers={"WWW-Authenticate": "Bearer"})
        return Response(self.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    # -- app wiring --------------------------------------------------------------------------------

    def append_apis(self, app: Any, opts: dict | None = None) -> list[str]:
        """Register this ChatStream's endpoints on ``app`` (see chatstream.serving.api.append_apis)."""
        return _api.append_apis(self, app, opts)

    def append_middlewares(self, app: Any, opts: dict | None = None) -> None:
        """Session settings and optional CORS (see chatstream.serving.api.append_middlewares)."""
        _api.append_middlewares(self, app, opts)
