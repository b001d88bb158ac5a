"""Request handlers: where a chat request's history comes from and where it goes afterwards.

ChatStream admits a request (capacity, role, input checks), then calls the handler's
``process_request(request, request_body, streaming_finished_callback)``, which returns the streaming
response. ``AbstractRequestHandler.generate`` turns the blocking ``chat_generator.stream(...)`` into
the 0.3 wire format (each chunk is the whole answer so far plus ``<::EOS::>``) by running the
iterator in a worker thread, so a disconnect stops the generation within one decode step (see
``generate`` for the exact rule). ``streaming_finished_callback(request, message)`` must be awaited
exactly once however the request ends; it frees the request's running slot.

``SimpleSessionRequestHandler`` (the default) keeps the chat prompt in the server-side session. It
holds the session's lock from the moment it reads the history until the stream ends, and saves the
history only when the turn completes (or the client stopped it, keeping the partial answer, as 0.3
did); on an error the history is left as it was before the turn. A second request of the same
session waits for that lock while holding its running slot (it was admitted first); if its client
leaves meanwhile, it gives the slot back at once.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from .._http import (
    FINISH_TOKEN,
    MESSAGE_ID_HEADER,
    PARAM_ALIASES,
    ChatStreamingResponse,
    error_response,
    escape_frame,
    parse_chat_request,
    unless_disconnected,
)
from ..chat_prompt import AbstractChatPrompt
from ..exceptions import ConfigurationError, PromptTooLongError
from ..generation import GenerationParams, build_input_ids, trim_history
from ..locale import Locale
from ..token_sampler import draw_seed

if TYPE_CHECKING:
    from ..chat_stream import ChatStream

FinishedCallback = Callable[[str], Awaitable[None]]

SUCCESS = "success"
DISCONNECTED_WHILE_STREAMING = "client_disconnected_while_streaming"
DISCONNECTED_BEFORE_STREAMING = "client_disconnected_before_streaming"
GENERATION_ERROR = "unknown_error_occurred,while chat_generator.generate"

_DONE = object()
# A worker-thread hop costs tens of microseconds, so steps faster than this share one hop; a step that
# takes longer (any real model on a real device) still gets a hop of its own. See `generate`.
_BATCH_SEC = 0.002


def check_prompt_fits(generator: Any, chat_prompt: AbstractChatPrompt, params: GenerationParams) -> None:
    """Raise PromptTooLongError when ``chat_prompt`` cannot fit ``params.context_len``."""
    check = getattr(generator, "check_prompt", None)
    if callable(check):
        check(chat_prompt, params)
        return
    tokenizer = getattr(generator, "tokenizer", None)
    if tokenizer is not None:
        build_input_ids(chat_prompt, tokenizer, params)


def _once(callback: FinishedCallback) -> FinishedCallback:
    done = False

    async def wrapper(message: str) -> None:
        nonlocal done
        if not done:
            done = True
            await callback(message)

    return wrapper


class AbstractRequestHandler(ABC):
    """Base of request handlers. ChatStream binds one instance to itself (one handler, one ChatStream)."""

    def __init__(self) -> None:
        self.chat_stream: ChatStream | None = None
        self.chat_generator: Any = None
        self.chat_prompt_clazz: Callable[[], AbstractChatPrompt] | None = None
        self.logger: logging.Logger = logging.getLogger("chatstream")
        self.eloc: Locale = Locale("en")

    def bind(self, chat_stream: ChatStream) -> None:
        if self.chat_stream is not None and self.chat_stream is not chat_stream:
            raise ConfigurationError(
                "this request handler already serves another ChatStream; give each ChatStream its own "
                "handler (e.g. request_handler=SimpleSessionRequestHandler())."
            )
        self.chat_stream = chat_stream
        self.chat_generator = chat_stream.chat_generator
        self.chat_prompt_clazz = chat_stream.new_chat_prompt
        self.logger = chat_stream.logger
        self.eloc = chat_stream.eloc

    def _generation_params(self, custom: GenerationParams | dict | None) -> GenerationParams | None:
        if custom is None or isinstance(custom, GenerationParams):
            return custom
        if not isinstance(custom, dict):
            raise ConfigurationError(f"`custom_generation_params` must be a GenerationParams, a dict or None, "
                                     f"got {type(custom).__name__}.")
        base = self.chat_stream.generation_params if self.chat_stream is not None else GenerationParams()
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
        custom_generation_params: GenerationParams | None = None,
        message_id: str | None = None,
    ) -> AsyncIterator[str]:
        """Stream the answer to ``chat_prompt`` (0.3 format) and write it into its open responder turn.

        ``chat_generation_finished_callback`` gets "success", "client_disconnected_while_streaming" or
        "unknown_error_occurred,..." once, after the model's iterator is closed. A generation error
        is re-raised so the HTTP response ends abnormally instead of looking complete.
        ``custom_generation_params`` is a GenerationParams, or a 0.3-style dict of overrides
        (``{"temperature": ..., "top_k_value": ...}``, None values ignored) applied to ChatStream's.

        The iterator runs in a worker thread, one *hop* at a time. A hop runs decode steps (``next()``
        calls) until one returns after ``_BATCH_SEC`` (2 ms) from the hop's start, or the stop flag is
        set: a step that takes 2 ms or more is always a hop of its own, faster steps share one so the
        thread round trip does not dominate. When the client leaves, the event loop sets the stop
        flag at once (it does not wait for the hop) and the generator also gets ``should_stop``, so
        the model stops after the step it is in; the slot is given back only once that step ended, so
        no more than ``num_of_concurrent_executions`` generations ever run.
        """
        generator = self.chat_generator
        if message_id is not None and chat_prompt.chat_contents and chat_prompt.chat_contents[-1].role == \
                chat_prompt.responder:
            chat_prompt.set_responder_last_msg_id(message_id)  # what set_feedback's message_id refers to (0.3)
        stop = threading.Event()
        try:
            params = self._generation_params(custom_generation_params)
            iterator = iter(generator.stream(chat_prompt, params, should_stop=stop.is_set))
        except Exception:
            self.logger.exception(self.eloc.t("generation_failed", request_id=id(request) if request else "-"))
            await chat_generation_finished_callback(GENERATION_ERROR)
            raise
        limiter = self.chat_stream.thread_limiter() if self.chat_stream is not None else None
        replacements = chat_prompt.get_replacement_when_output()
        text, message = "", GENERATION_ERROR
        busy = threading.Lock()  # held while a worker thread runs the model's iterator

        def step() -> tuple[list[str], bool, Exception | None]:
            """One decode step in a worker thread, or several when they are fast (within _BATCH_SEC)."""
            deltas: list[str] = []
            with busy:
                deadline = time.perf_counter() + _BATCH_SEC
                try:
                    while True:
                        delta = next(iterator, _DONE)
                        if delta is _DONE:
                            return deltas, True, None
                        deltas.append(delta)
                        if stop.is_set() or time.perf_counter() >= deadline:
                            return deltas, False, None
                except Exception as error:  # raised on the event loop, after what came before it is sent
                    return deltas, True, error

        try:
            while True:
                # abandon_on_cancel: a disconnect reaches the `finally` below (which sets the stop flag and
                # then waits for the running step) without first waiting for the whole hop
                deltas, ended, error = await anyio.to_thread.run_sync(step, limiter=limiter,
                                                                      abandon_on_cancel=True)
                for delta in deltas:
                    text += delta
                    shown = chat_prompt.replace_string(text, replacements) if replacements else text
                    chat_prompt.set_responder_last_msg(shown)
                    yield escape_frame(shown) + FINISH_TOKEN
                if error is not None:
                    raise error
                if ended:
                    break
            if not text:  # an answer with no token: its one (empty) chunk, as 0.3 sent it
                yield FINISH_TOKEN
            message = SUCCESS
        except anyio.get_cancelled_exc_class():
            message = DISCONNECTED_WHILE_STREAMING
            raise
        except GeneratorExit:  # the response was closed without being cancelled
            message = DISCONNECTED_WHILE_STREAMING
            raise
        except Exception:
            request_id = id(request) if request is not None else "-"
            self.logger.exception(self.eloc.t("generation_failed", request_id=request_id))
            raise
        finally:
            stop.set()
            with anyio.CancelScope(shield=True):
                if not busy.acquire(blocking=False):  # a hop still runs (the wait for it was cancelled)
                    await anyio.to_thread.run_sync(busy.acquire)
                try:
                    close = getattr(iterator, "close", None)
                    if close is not None:
                        close()
                finally:
                    busy.release()
                close_open_answer(chat_prompt)
                await chat_generation_finished_callback(message)


REGENERATION_KEY = "regeneration"  # in session data: [turn, how many times its answer was regenerated]


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
        assert self.chat_stream is not None
        prompt = self.chat_stream.prompt_in_session(session_data or {})
        return prompt if prompt is not None else self.chat_stream.new_chat_prompt()

    async def process_request(
        self,
        request: Request,
        request_body: bytes | str | None,
        streaming_finished_callback: Callable[..., Awaitable[None]],
    ) -> Response:
        cs = self.chat_stream
        assert cs is not None, "the handler is not bound to a ChatStream"
        parsed = parse_chat_request(request_body if request_body is not None else await request.body(), self.eloc)
        if isinstance(parsed, Response):
            await streaming_finished_callback(request, "bad_request")
            return parsed
        session = cs.sessions.current(request)
        lock = cs.sessions.lock(session.session_id) if session is not None else None
        if lock is not None and not await unless_disconnected(request, lock.acquire):
            await streaming_finished_callback(request, DISCONNECTED_BEFORE_STREAMING)
            return Response(status_code=499)  # nobody reads it: the client has gone
        try:
            if session is not None:
                await session.reload()
            prompt = self.load_prompt(session.data if session is not None else None)
            before = prompt.to_dict()
            rejection = self._start_turn(prompt, parsed.user_input, parsed.regenerate)
            params = cs.generation_params_for(session)
            regeneration = _regeneration(session, prompt.get_turn(), parsed.regenerate)
            if regeneration[1]:  # a regenerated answer is a new, still reproducible, draw
                params = params.replace(seed=draw_seed(params.seed, *regeneration, params.sampling))
            if rejection is None:
                try:  # tokenizes the history (maybe several times): not on the event loop
                    await anyio.to_thread.run_sync(check_prompt_fits, self.chat_generator, prompt, params)
                except PromptTooLongError as error:
                    rejection = error_response(400, "input_too_long", self.eloc.t("input_too_long", reason=str(error)))
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        if rejection is not None:
            if lock is not None:
                lock.release()
            await streaming_finished_callback(request, "bad_request")
            return rejection

        async def finished(message: str) -> None:
            try:
                if session is not None:
                    if message in (SUCCESS, DISCONNECTED_WHILE_STREAMING):
                        if cs.max_history_turns is not None:  # the stored history is bounded
                            trim_history(prompt, cs.max_history_turns)
                        await session.update(chat_prompt=prompt, **{REGENERATION_KEY: list(regeneration)})
                    else:  # the turn failed: the stored history is untouched; undo the live copy too
                        session.data["chat_prompt"] = cs.chat_prompt_from_dict(before)
            finally:
                if lock is not None:
                    lock.release()
                await streaming_finished_callback(request, message)

        finished = _once(finished)
        message_id = str(uuid.uuid4())
        body = self.generate(prompt, finished, request, params, message_id=message_id)
        response = ChatStreamingResponse(body, headers={MESSAGE_ID_HEADER: message_id})
        response.add_close_callback(lambda: finished(DISCONNECTED_BEFORE_STREAMING))
        return response

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
