"""One chat turn of the 0.3 endpoint (``POST /chat_stream``), from the request to the released slot.

A turn goes down, in this order, never back up:

1. **parse once**: ready? the body (size, JSON content type, ``{"user_input", "regenerate"}``), kept on
   the request (``turn_state``) so the handler does not read it again;
2. **authorise**: the caller's role and session (``authorization.Gate``); a pass phrase typed into the
   chat switches a browser's role instead of being answered;
3. **admit**: a running slot now, a place in the bounded queue, or the refusal (429 / 0.3's in-band
   ``too_many_requests``); a queued client that leaves gives its place back;
4. **lock and load the session** (``SimpleSessionRequestHandler.process_request``): the session's lock is
   held from reading the history until the stream ends; the prompt is checked (fits the context) in the
   generation's worker thread, before any token, so a 400 still comes before the first byte;
5. **stream**: ``AbstractRequestHandler.generate`` runs the blocking generator through ``_driver.drive``
   (one worker thread, which first checked the prompt in step 4; stop within one decode step on
   disconnect) and sends the 0.3 frames;
6. **commit or roll back**: the history is saved when the answer completed (or the client stopped it,
   keeping the partial answer, as 0.3 did), else the session is left as it was;
7. **release**: the slot is freed exactly once, the outcome (``metrics.Outcome``) recorded, the probe
   segment flushed (before the last byte in probe mode) and the app's finish callback called.

Request handlers get a ``TurnContext`` (sessions, generator, parameter resolver, limiter, locale),
never the ChatStream. ``ChatTurns`` is given everything it needs by ChatStream at construction.
The 0.3 finish callbacks keep getting 0.3's messages (strings; ``Outcome`` values are strings too).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..engine.chat_prompt import AbstractChatPrompt
from ..engine.events import FinishEvent, generation_events
from ..engine.generation import GenerationParams, check_prompt_fits, trim_history
from ..engine.token_sampler import draw_seed
from ..exceptions import ConfigurationError, PromptTooLongError, SessionStoreError, SessionStoreUnavailable
from ._driver import INLINE_BATCH_ITEMWISE, call_for, drive, runs_inline
from ._http import (
    DEV_TOOL_HEADER,
    FINISH_TOKEN,
    MESSAGE_ID_HEADER,
    PARAM_ALIASES,
    ChatRequest,
    ChatStreamingResponse,
    call_maybe_async,
    error_response,
    escape_frame,
    json_content_type_error,
    parse_chat_request,
    read_body,
    unless_disconnected,
)
from .admission import Admission, once
from .authorization import Caller, Gate
from .client_roles import SESSION_ROLE_KEY, ClientRole
from .locale import Locale
from .metrics import Metrics, Outcome, RejectReason, RequestTimer
from .sessions import HttpSession, SessionManager

ENDPOINT = "chat_stream"  # the metrics' endpoint label

# the messages 0.3's finish callbacks get (the first three are Outcome values, the errors are 0.3's words)
SUCCESS = Outcome.SUCCESS.value
DISCONNECTED_WHILE_STREAMING = Outcome.DISCONNECTED_WHILE_STREAMING.value
DISCONNECTED_BEFORE_STREAMING = Outcome.DISCONNECTED_BEFORE_STREAMING.value
GENERATION_ERROR = "unknown_error_occurred,while chat_generator.generate"
PROCESS_REQUEST_ERROR = "unknown_error_occurred,while process_request"
NO_FLUSH = {Outcome.BAD_REQUEST, Outcome.REJECTED, Outcome.DISCONNECTED_BEFORE_STREAMING}
REGENERATION_KEY = "regeneration"  # in session data: [turn, how many times its answer was regenerated]
_STATE_KEY = "chatstream.serving.turn"  # where a turn keeps its state in the ASGI scope

FinishedCallback = Callable[[str], Awaitable[None]]


def outcome_of(message: str) -> Outcome:
    """The outcome a finish message (0.3's words or an Outcome value) stands for; unknown ones are errors."""
    try:
        return Outcome(message)
    except ValueError:
        return Outcome.ERROR


@dataclass
class TurnContext:
    """What a chat turn's request handler needs, given explicitly (ChatStream builds it)."""

    sessions: SessionManager
    generator: Any
    params_for: Callable[[HttpSession | None], GenerationParams]  # the server's, with the session's overrides
    limiter: Callable[[], anyio.CapacityLimiter]
    locale: Locale
    new_prompt: Callable[[], AbstractChatPrompt]
    prompt_from_dict: Callable[[dict], AbstractChatPrompt]
    max_history_turns: int | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("chatstream"))

    def prompt_in_session(self, session_data: dict) -> AbstractChatPrompt | None:
        """The chat prompt kept in a session (live, or rebuilt from its saved JSON), or None."""
        from .sessions import PROMPT_KEY

        stored = session_data.get("chat_prompt")
        if isinstance(stored, dict) and PROMPT_KEY in stored:
            return self.prompt_from_dict(stored[PROMPT_KEY])
        return stored if isinstance(stored, AbstractChatPrompt) else None


@dataclass
class TurnState:
    """One admitted turn, kept on its request: the parsed body and the metrics timer."""

    chat_request: ChatRequest
    timer: RequestTimer | None = None
    usage: tuple[int, int] | None = None  # (prompt, completion) tokens, from the generation's FinishEvent
    # the generation process_request started with the prompt check in its worker thread, for generate() to stream
    batches: AsyncGenerator[list, None] | None = None


def turn_state(request: Request | None) -> TurnState | None:
    return request.scope.get(_STATE_KEY) if request is not None else None


# -- request handlers (the 0.3 names) -----------------------------------------------------------------


class AbstractRequestHandler(ABC):
    """Base of request handlers. ChatStream binds one instance to its TurnContext (one handler, one ChatStream)."""

    def __init__(self) -> None:
        self.context: TurnContext | None = None
        self.chat_generator: Any = None
        self.chat_prompt_clazz: Callable[[], AbstractChatPrompt] | None = None
        self.logger: logging.Logger = logging.getLogger("chatstream")
        self.eloc: Locale = Locale("en")

    def bind(self, context: TurnContext) -> None:
        if self.context is not None and self.context is not context:
            raise ConfigurationError(
                "this request handler already serves another ChatStream; give each ChatStream its own "
                "handler (e.g. request_handler=SimpleSessionRequestHandler())."
            )
        self.context = context
        self.chat_generator = context.generator
        self.chat_prompt_clazz = context.new_prompt
        self.logger = context.logger
        self.eloc = context.locale

    def _generation_params(self, custom: GenerationParams | dict | None) -> GenerationParams | None:
        if custom is None or isinstance(custom, GenerationParams):
            return custom
        if not isinstance(custom, dict):
            raise ConfigurationError(f"`custom_generation_params` must be a GenerationParams, a dict or None, "
                                     f"got {type(custom).__name__}.")
        base = self.context.params_for(None) if self.context is not None else GenerationParams()
        return base.replace(**{PARAM_ALIASES.get(key, key): value for key, value in custom.items()
                               if value is not None})

    @abstractmethod
    async def process_request(
        self,
        request: Request,
        request_body: bytes | str | None,
        streaming_finished_callback: Callable[..., Awaitable[None]],
    ) -> Response:
        """Return the response for an admitted chat request; ``streaming_finished_callback`` must run once."""

    async def generate(
        self,
        chat_prompt: AbstractChatPrompt,
        chat_generation_finished_callback: FinishedCallback,
        request: Request | None = None,
        custom_generation_params: GenerationParams | dict | None = None,
        message_id: str | None = None,
    ) -> AsyncIterator[str]:
        """Stream the answer to ``chat_prompt`` (0.3 format) and write it into its open responder turn.

        ``chat_generation_finished_callback`` gets "success", "client_disconnected_while_streaming" or
        "unknown_error_occurred,..." once, after the model's iterator is closed. A generation error
        is re-raised so the HTTP response ends abnormally instead of looking complete.
        ``custom_generation_params`` is a GenerationParams, or a 0.3-style dict of overrides
        (``{"temperature": ..., "top_k_value": ...}``, None values ignored) applied to ChatStream's.
        The generator runs through ``_driver.drive``: when the client leaves, the model stops after the
        step it is in, and the callback (which frees the slot) runs only once that step ended.
        """
        if message_id is not None and chat_prompt.chat_contents and chat_prompt.chat_contents[-1].role == \
                chat_prompt.responder:
            chat_prompt.set_responder_last_msg_id(message_id)  # what set_feedback's message_id refers to (0.3)
        generator, request_id = self.chat_generator, id(request) if request is not None else "-"
        try:
            params = self._generation_params(custom_generation_params)
        except Exception:
            self.logger.exception(self.eloc.t("generation_failed", request_id=request_id))
            await chat_generation_finished_callback(GENERATION_ERROR)
            raise
        state = turn_state(request)
        timer = state.timer if state is not None else None
        limiter = self.context.limiter() if self.context is not None else None
        replacements = chat_prompt.get_replacement_when_output()
        delta = state is not None and state.chat_request.delta
        # delta mode: the last (longest replaced string - 1) characters wait, as a replacement may still change them
        hold = max((len(old) for old, _ in replacements), default=1) - 1 if delta and replacements else 0
        text, message, sent, escaping, shown = "", GENERATION_ERROR, 0, False, ""
        batches = state.batches if state is not None else None
        if batches is not None:  # started by process_request (it checked the prompt in the generation's thread)
            state.batches = None
        else:
            batches = drive(lambda should_stop: generation_events(generator, chat_prompt, params, should_stop),
                            limiter, inline=runs_inline(generator), inline_batch=INLINE_BATCH_ITEMWISE)
        sending = None  # the answer as the frame being sent shows it, while a batch's frames go out
        try:
            async with contextlib.aclosing(batches):
                async for events in batches:
                    # a generation's one FinishEvent comes last: every other event of a batch is a token
                    tokens = len(events) - isinstance(events[-1], FinishEvent) if timer is not None and events else 0
                    if tokens:
                        timer.token(tokens)
                    # a batch's frames are made first, then sent back to back: the socket writes of one stream
                    # follow each other as closely as a bare server's do (the kernel then coalesces their work)
                    frames: list[tuple[str, str]] = []
                    grew = False  # delta mode may hold new text back: a batch can grow the answer with no frame
                    for event in events:
                        if isinstance(event, FinishEvent) and state is not None:
                            state.usage = (event.prompt_tokens, event.completion_tokens)
                        if not event.text:
                            continue
                        text += event.text
                        grew = True
                        shown = chat_prompt.replace_string(text, replacements) if replacements else text
                        if delta:
                            if len(shown) - hold > sent:
                                frames.append((escape_frame(shown[sent:len(shown) - hold]) + FINISH_TOKEN, shown))
                                sent = len(shown) - hold
                            continue
                        # only the new end can bring a marker in (scanning the whole answer per token is O(n^2))
                        escaping = escaping or bool(replacements) or "<::E" in shown[-len(event.text) - 3:]
                        frames.append(((escape_frame(shown) if escaping else shown) + FINISH_TOKEN, shown))
                    for frame, showing in frames:
                        sending = showing
                        yield frame
                    if grew:
                        chat_prompt.set_responder_last_msg(shown)
                    sending = None
            if not text:  # an answer with no token: its one (empty) chunk, as 0.3 sent it
                yield FINISH_TOKEN
            elif delta and sent < len(shown):  # the held-back end
                yield escape_frame(shown[sent:]) + FINISH_TOKEN
            message = SUCCESS
        except (anyio.get_cancelled_exc_class(), GeneratorExit):  # the client left (or the response was closed)
            message = DISCONNECTED_WHILE_STREAMING
            if sending is not None:  # left during a batch: the answer is kept as far as it was sent
                chat_prompt.set_responder_last_msg(sending)
            raise
        except Exception:
            self.logger.exception(self.eloc.t("generation_failed", request_id=request_id))
            raise
        finally:
            close_open_answer(chat_prompt)
            with anyio.CancelScope(shield=True):
                await chat_generation_finished_callback(message)


def _regeneration(session: Any, turn: int, regenerate: bool) -> tuple[int, int]:
    """(turn, regeneration count) of the answer about to be generated: 0 for a turn's first answer, then
    one more than the session's last for each regeneration of the same turn."""
    if not regenerate:
        return turn, 0
    saved = session.data.get(REGENERATION_KEY) if session is not None else None
    same_turn = isinstance(saved, list) and len(saved) == 2 and saved[0] == turn and isinstance(saved[1], int)
    last = saved[1] if same_turn else 0
    return turn, last + 1


def close_open_answer(chat_prompt: AbstractChatPrompt) -> None:
    """An answer that got no text ends as "" (0.3 did the same): left None, it would stay an open turn
    and the next prompt would continue it."""
    contents = chat_prompt.chat_contents
    if contents and contents[-1].role == chat_prompt.responder and contents[-1].get_message() is None:
        chat_prompt.set_responder_last_msg("")


class SimpleSessionRequestHandler(AbstractRequestHandler):
    """Keeps each browser's chat prompt in its server-side session (agents chat without history)."""

    def __init__(self, session_attr_name: str = "session") -> None:
        super().__init__()
        self.session_attr = session_attr_name  # kept for 0.3 code that reads it

    def get_request_handler_type(self) -> str:
        return "http_session"

    def load_prompt(self, session_data: dict | None) -> AbstractChatPrompt:
        """The session's chat prompt (rebuilt from its saved JSON), or a new one."""
        ctx = self._bound()
        prompt = ctx.prompt_in_session(session_data or {})
        return prompt if prompt is not None else ctx.new_prompt()

    def _bound(self) -> TurnContext:
        if self.context is None:
            raise ConfigurationError("this request handler is not bound to a ChatStream; pass it as "
                                     "ChatStream(request_handler=...).")
        return self.context

    async def process_request(
        self,
        request: Request,
        request_body: bytes | str | None,
        streaming_finished_callback: Callable[..., Awaitable[None]],
    ) -> Response:
        ctx = self._bound()
        state = turn_state(request)
        parsed = state.chat_request if state is not None else parse_chat_request(
            request_body if request_body is not None else await request.body(), self.eloc)
        if isinstance(parsed, Response):
            await streaming_finished_callback(request, Outcome.BAD_REQUEST.value)
            return parsed
        session = ctx.sessions.current(request)
        lock = ctx.sessions.lock(session.session_id) if session is not None else None
        if lock is not None:
            if lock.free():  # taken at once: no need to watch for the client leaving meanwhile
                await lock.acquire()
            elif not await unless_disconnected(request, lock.acquire):
                await streaming_finished_callback(request, DISCONNECTED_BEFORE_STREAMING)
                return Response(status_code=499)  # nobody reads it: the client has gone
        try:
            if session is not None:
                await session.reload()
            prompt = self.load_prompt(session.data if session is not None else None)
            before = prompt.to_dict()
            rejection = self._start_turn(prompt, parsed.user_input, parsed.regenerate)
            params = ctx.params_for(session)
            regeneration = _regeneration(session, prompt.get_turn(), parsed.regenerate)
            if regeneration[1]:  # a regenerated answer is a new, still reproducible, draw
                params = params.replace(seed=draw_seed(params.seed, *regeneration, params.sampling))
            if rejection is None:
                rejection = await self._check_prompt(prompt, params, state)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        if rejection is not None:
            if lock is not None:
                lock.release()
            await streaming_finished_callback(request, Outcome.BAD_REQUEST.value)
            return rejection

        async def finished(message: str) -> None:
            try:
                if session is not None:
                    if message in (SUCCESS, DISCONNECTED_WHILE_STREAMING):  # commit
                        if ctx.max_history_turns is not None:  # the stored history is bounded
                            trim_history(prompt, ctx.max_history_turns)
                        try:  # atomic and guarded: refused when another replica wrote the history meanwhile
                            await session.update(chat_prompt=prompt, guard=("chat_prompt",),
                                                 **{REGENERATION_KEY: list(regeneration)})
                        except SessionStoreError as error:  # nothing was written: the stream must not look complete
                            self.logger.exception("the turn's history could not be saved; the session is as it was")
                            message = (Outcome.STORE_UNAVAILABLE if isinstance(error, SessionStoreUnavailable)
                                       else Outcome.ERROR).value
                            session.data["chat_prompt"] = ctx.prompt_from_dict(before)
                            raise
                    else:  # roll back: the stored history is untouched; undo the live copy too
                        session.data["chat_prompt"] = ctx.prompt_from_dict(before)
            finally:
                if lock is not None:
                    lock.release()
                await streaming_finished_callback(request, message)

        finished = once(finished)
        message_id = str(uuid.uuid4())
        started = state.batches if state is not None else None
        body = self.generate(prompt, finished, request, params, message_id=message_id)
        response = ChatStreamingResponse(body, headers={MESSAGE_ID_HEADER: message_id})
        if started is not None:  # a response never sent stops its generation first (a no-op once it was streamed)
            response.add_close_callback(started.aclose)
        response.add_close_callback(lambda: finished(DISCONNECTED_BEFORE_STREAMING))
        return response

    async def _check_prompt(self, prompt: AbstractChatPrompt, params: GenerationParams, state: TurnState | None
                            ) -> Response | None:
        """None when ``prompt`` fits the context, else the 400. The check tokenizes the history (maybe several
        times), so it runs in a worker thread: for a turn of ``ChatTurns`` (``state``) streamed by this class's
        ``generate``, in the generation's own, which goes on to generate the answer for ``generate``
        (``state.batches``): no thread round trip of its own."""
        generator, ctx = self.chat_generator, self._bound()
        try:
            # a handler that overrides generate() would leave the started generation unread: check apart
            if state is None or type(self).generate is not AbstractRequestHandler.generate:
                await call_for(generator, check_prompt_fits, generator, prompt, params)
                return None
            batches = drive(lambda should_stop: generation_events(generator, prompt, params, should_stop),
                            ctx.limiter(), prepare=lambda: check_prompt_fits(generator, prompt, params),
                            inline=runs_inline(generator), inline_batch=INLINE_BATCH_ITEMWISE)  # a chunk per token
            await batches.__anext__()  # [] once the check passed; its error otherwise
            state.batches = batches
        except PromptTooLongError as error:
            return error_response(400, "input_too_long", self.eloc.t("input_too_long", reason=str(error)))
        return None

    def _start_turn(self, prompt: AbstractChatPrompt, user_input: str | None, regenerate: bool) -> Response | None:
        """Open the responder turn to generate; a 400 response when regenerating has nothing to redo."""
        if regenerate:
            last = prompt.chat_contents[-1] if prompt.chat_contents else None
            if last is None or last.role != prompt.responder:
                return error_response(400, "nothing_to_regenerate", self.eloc.t("nothing_to_regenerate"))
            prompt.clear_last_responder_message()
            return None
        prompt.add_requester_msg(user_input or "")
        prompt.add_responder_msg(None)
        return None


# -- the turn -----------------------------------------------------------------------------------------


@dataclass
class TurnSettings:
    """ChatStream's settings of the chat endpoint."""

    max_body_bytes: int
    retry_after_sec: int
    too_many_as_http_error: bool
    send_timeout_sec: float | None


class ChatTurns:
    """Serves ``POST /chat_stream``: one turn per request, in the order of the module doc."""

    def __init__(self, context: TurnContext, gate: Gate, admission: Admission, handler: AbstractRequestHandler,
                 metrics: Metrics, is_ready: Callable[[], bool], settings: TurnSettings,
                 flush: Callable[[], None] | None = None) -> None:
        if not isinstance(handler, AbstractRequestHandler):
            raise ConfigurationError(f"`request_handler` must be an AbstractRequestHandler, got "
                                     f"{type(handler).__name__}.")
        handler.bind(context)
        self.context, self.gate, self.admission, self.handler = context, gate, admission, handler
        self.metrics, self.is_ready, self.settings, self.flush = metrics, is_ready, settings, flush

    def _refuse(self, reason: RejectReason, outcome: Outcome, response: Response) -> Response:
        self.metrics.count_rejection(ENDPOINT, reason)
        self.metrics.count_outcome(ENDPOINT, outcome)
        return response

    async def parse(self, request: Request, request_body: bytes | str | None
                    ) -> tuple[bytes | str | None, ChatRequest | Response]:
        """Step 1: the body read (or ``request_body``) and checked once; (body, request or the 4xx)."""
        loc, limit = self.context.locale, self.settings.max_body_bytes
        body = request_body if request_body is not None else await read_body(request, limit)
        if body is None or len(body) > limit:
            return body, error_response(413, "body_too_large", loc.t("body_too_large", limit=limit))
        return body, json_content_type_error(request, body, loc) or parse_chat_request(body, loc)

    async def handle(self, request: Request, request_body: bytes | str | None = None,
                     callback: Callable | None = None) -> Response:
        """Answer ``{"user_input": str, "regenerate": bool}`` with the 0.3 text/plain stream."""
        loc = self.context.locale
        if not self.is_ready():
            return self._refuse(RejectReason.NOT_READY, Outcome.NOT_READY, error_response(
                503, "not_ready", loc.t("not_ready"), {"Retry-After": "1"}))
        body, parsed = await self.parse(request, request_body)
        try:
            caller = await self.gate.authorize(request, ENDPOINT)
        except SessionStoreUnavailable as error:
            return self._store_unavailable(error)
        if isinstance(caller, Response):
            return self._refuse(RejectReason.FORBIDDEN, Outcome.FORBIDDEN, caller)
        if isinstance(parsed, Response):
            return caller.respond(self._refuse(RejectReason.BAD_REQUEST, Outcome.BAD_REQUEST, parsed))
        if caller.session is not None and parsed.user_input and not parsed.regenerate:
            promoted = self.gate.client_roles.role_for_phrase(parsed.user_input)
            if promoted is not None:
                return caller.respond(await self._promote(caller.session, promoted))
        ticket = self.admission.try_enter()
        if ticket is None:
            return caller.respond(self._refuse(RejectReason.QUEUE_FULL, Outcome.REJECTED, self._too_many_requests()))
        state = TurnState(parsed, self.metrics.request(ENDPOINT))
        request.scope[_STATE_KEY] = state
        @once
        async def release(request: Request, message: str) -> None:
            ticket.release()
            outcome = outcome_of(message)
            state.timer.finish(outcome, *(state.usage or ()))
            if outcome is Outcome.BAD_REQUEST:
                self.metrics.count_rejection(ENDPOINT, RejectReason.BAD_REQUEST)
            if self.context.logger.isEnabledFor(logging.DEBUG):  # stats() builds a dict: only when it is shown
                self.context.logger.debug("request finished: %s (load %s)", message, self.admission.stats())
            if self.flush is not None and outcome not in NO_FLUSH:
                try:
                    await anyio.to_thread.run_sync(self.flush)
                except Exception:
                    self.context.logger.exception("probe recorder flush failed")
            if callback is not None:
                try:
                    await call_maybe_async(callback, request, message)
                except Exception:
                    self.context.logger.exception("the finish callback raised")

        try:
            if not ticket.granted and not await unless_disconnected(request, ticket.wait):
                await release(request, DISCONNECTED_BEFORE_STREAMING)
                return Response(status_code=499)
            response = await self.handler.process_request(request, body, release)
        except SessionStoreUnavailable as error:  # before the first byte: nothing was written
            await release(request, Outcome.STORE_UNAVAILABLE.value)
            return caller.respond(self._store_unavailable(error, counted=True))
        except Exception:
            self.context.logger.exception("the request handler failed")
            await release(request, PROCESS_REQUEST_ERROR)
            return caller.respond(error_response(500, "internal_server_error",
                                                 loc.t("internal_error", doing="process_request")))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await release(request, DISCONNECTED_BEFORE_STREAMING)
            raise
        if isinstance(response, StreamingResponse):
            response = ChatStreamingResponse.adopt(response)
            response.send_timeout_sec = self.settings.send_timeout_sec
            # probe mode: the answer's last bytes go out only once its segment is on disk
            response.hold_last_chunk = self.flush is not None
            response.add_close_callback(lambda: release(request, DISCONNECTED_BEFORE_STREAMING))
            if caller.role is not None and caller.role.enable_dev_tool:
                response.headers[DEV_TOOL_HEADER] = "true"
        else:
            await release(request, Outcome.REJECTED.value)
        return caller.respond(response)

    def _store_unavailable(self, error: SessionStoreUnavailable, counted: bool = False) -> Response:
        """The 503 of a turn whose session store could not be reached (``counted``: its outcome is recorded)."""
        self.context.logger.warning("session store unavailable: %s", error)
        self.metrics.count_rejection(ENDPOINT, RejectReason.STORE_UNAVAILABLE)
        if not counted:
            self.metrics.count_outcome(ENDPOINT, Outcome.STORE_UNAVAILABLE)
        return error_response(503, "session_store_unavailable", self.context.locale.t("store_unavailable"),
                              {"Retry-After": str(max(1, self.settings.retry_after_sec))})

    def _too_many_requests(self) -> Response:
        stats = self.admission.stats()
        detail = self.context.locale.t("too_many_requests", running=stats["running"], waiting=stats["waiting"])
        if self.settings.too_many_as_http_error:
            return JSONResponse({"success": False, "error": "too_many_requests", "detail": detail}, status_code=429,
                                headers={"Retry-After": str(self.settings.retry_after_sec)})
        return JSONResponse({"error": "too_many_requests", "detail": detail})  # 0.3: in-band, status 200

    async def _promote(self, session: HttpSession, role: ClientRole) -> Response:
        await session.update(**{SESSION_ROLE_KEY: role.name})
        await self.context.sessions.rotate(session)  # new privileges, new id: a planted cookie gains nothing
        self.context.logger.info("a browser client switched to role %s", role.name)
        text = self.context.locale.t("role_changed", role=role.name)

        async def chunks() -> AsyncIterator[str]:
            yield text + FINISH_TOKEN

        response = ChatStreamingResponse(chunks())
        if role.enable_dev_tool:
            response.headers[DEV_TOOL_HEADER] = "true"
        return response


async def console_turn(generator: Any, prompt: AbstractChatPrompt, user_input: str, params: GenerationParams,
                       limiter: anyio.CapacityLimiter | None = None) -> AsyncIterator[tuple[str, str, str]]:
    """0.3's console chat turn on ``prompt``: yields ``(response_text, delta, pos)`` with pos "begin", "mid",
    then ``(text, "", "end")``; driven like an HTTP turn (``_driver.drive``)."""
    prompt.add_requester_msg(user_input)
    prompt.add_responder_msg(None)
    text, pos = "", "begin"
    batches = drive(lambda should_stop: generator.stream(prompt, params, should_stop=should_stop), limiter,
                    inline=runs_inline(generator))
    async with contextlib.aclosing(batches):
        async for deltas in batches:
            for delta in deltas:
                text += delta
                prompt.set_responder_last_msg(text)
                yield text, delta, pos
                pos = "mid"
    close_open_answer(prompt)
    yield text, "", "end"


__all__ = [
    "DISCONNECTED_BEFORE_STREAMING", "DISCONNECTED_WHILE_STREAMING", "GENERATION_ERROR", "SUCCESS",
    "AbstractRequestHandler", "Caller", "ChatTurns", "SimpleSessionRequestHandler", "TurnContext", "TurnSettings",
    "check_prompt_fits", "close_open_answer", "console_turn", "outcome_of",
]
