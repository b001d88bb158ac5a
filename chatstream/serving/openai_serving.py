"""``POST /v1/chat/completions`` and ``GET /v1/models``: the OpenAI-compatible API, stateless.

A request goes down, never back up: authorise (the optional API key, compared in constant time) ->
ready? -> read and parse once (``openai_protocol``) -> generation parameters and the prompt from
``messages`` -> does it fit? -> admit (the same ``Admission`` as the 0.3 endpoint: 429 with Retry-After
when full) -> wait for a slot unless the client leaves -> generate through the shared driver (worker
threads, the same limiter, stop within one step on disconnect) -> SSE chunks or one JSON body -> release.
``OpenAIServing`` is given what it needs in a ``ServingContext``; it never reaches for the ChatStream.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..engine.chat_prompt import AbstractChatPrompt
from ..engine.constraints import check_constraint
from ..engine.events import FinishEvent, GenerationEvent, TokenEvent, generation_events
from ..engine.generation import GenerationParams, check_prompt_fits
from ..engine.token_sampler import draw_seed
from ..exceptions import ConfigurationError, ConstraintError, PromptTooLongError
from . import openai_protocol as proto
from . import openai_tools as tools
from ._driver import call_for, drive, runs_inline
from ._http import ChatStreamingResponse, read_body, unless_disconnected
from .admission import Admission, once
from .metrics import Metrics, Outcome, RejectReason

ENDPOINT = "openai"  # the metrics' endpoint label


class EventStreamResponse(ChatStreamingResponse):
    """Server-sent events with ChatStreamingResponse's close handling."""

    media_type = "text/event-stream"


@dataclass
class ServingContext:
    """What the OpenAI endpoint needs, given explicitly (ChatStream builds it)."""

    generator: Any
    admission: Admission
    limiter: Callable[[], anyio.CapacityLimiter]
    params: Callable[[], GenerationParams]
    new_prompt: Callable[[], AbstractChatPrompt]
    metrics: Metrics
    is_ready: Callable[[], bool]
    model_name: str
    api_key: str | None = None
    retry_after_sec: int = 1
    max_body_bytes: int = 64 * 1024
    logger: logging.Logger = logging.getLogger("chatstream")  # noqa: RUF009 - a shared logger, not a mutable default
    on_finished: Callable[[Outcome], Any] | None = None  # awaited once per admitted request (probe flush)


def served_model_name(tokenizer: Any, fallback: str) -> str:
    """The model id clients send: the tokenizer's directory (or Hub id) name, else ``fallback``."""
    name = str(getattr(tokenizer, "name_or_path", "") or "").rstrip("/\\")
    return name.replace("\\", "/").rsplit("/", 1)[-1] or fallback


def check_api_key(request: Request, api_key: str | None) -> None:
    """Raise the 401 unless ``api_key`` is None or the request carries it as ``Authorization: Bearer``."""
    if api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if not (scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), api_key.encode())):
        raise proto.invalid_api_key()


def prompt_from_messages(request: proto.ChatCompletionRequest, new_prompt: Callable[[], AbstractChatPrompt]
                         ) -> AbstractChatPrompt:
    """A new conversation holding ``messages`` (system/developer texts joined as the system message)."""
    prompt = new_prompt()
    system = [m.text for m in request.messages if m.role in ("system", "developer")]
    if system:
        prompt.set_system("\n".join(system))
    for message in request.messages:
        if message.role == "user":
            prompt.add_requester_msg(message.text)
        elif message.role == "assistant":
            prompt.add_responder_msg(message.text)
    prompt.add_responder_msg(None)
    return prompt


def generation_params(request: proto.ChatCompletionRequest, base: GenerationParams,
                      tool_format: tools.ToolFormat | None = None, vocab_size: int | None = None) -> GenerationParams:
    """The server's parameters with the request's choices; raises the 400 for a value they refuse."""
    changes: dict[str, Any] = {}
    if request.logit_bias:
        bad = [k for k in request.logit_bias if not k.strip().isdigit() or (vocab_size and int(k) >= vocab_size)]
        if bad:
            raise proto.bad_request(f"`logit_bias` key {bad[0]!r} is not a token id of this model (0 to "
                                    f"{(vocab_size or 1) - 1}).", param="logit_bias")
        changes["logit_bias"] = request.logit_bias
    try:
        constraint = tools.response_constraint(request, tool_format)
    except ConstraintError as error:
        raise proto.bad_request(str(error), param="response_format", code="unsupported_schema") from None
    if constraint is not None:
        changes["constraint"] = constraint
    for name in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(request, name)
        if value is not None:
            changes[name] = value
    if request.max_new_tokens is not None:
        if request.max_new_tokens > base.max_new_tokens:
            name = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
            raise proto.bad_request(f"`{name}` (={request.max_new_tokens}) may not exceed this server's "
                                    f"{base.max_new_tokens}.", param=name)
        changes["max_new_tokens"] = request.max_new_tokens
    if request.stop_strings:
        changes["stop_strings"] = (*base.stop_strings, *request.stop_strings)
    try:
        return base.replace(**changes) if changes else base
    except ConfigurationError as error:
        raise proto.bad_request(str(error)) from None


def choice_params(params: GenerationParams, choice: int) -> GenerationParams:
    """The parameters of choice ``choice`` of ``n``: the request's, with its own seed after the first (derived
    from the request's, so a seeded request gives the same n answers again; unseeded stays unseeded)."""
    if choice == 0 or params.seed is None:
        return params
    return params.replace(seed=draw_seed(params.seed, 0, choice, params.sampling))


def started_together(choices: list[Iterator]) -> Iterator:
    """The items of each of ``choices`` in turn, each started (its first item taken) before any is read on:
    a batched generator then decodes the n choices in one batch. Closing it closes them all."""
    try:
        firsts = [next(choice, None) for choice in choices]
        for first, choice in zip(firsts, choices, strict=True):
            if first is not None:
                yield first
            yield from choice
    finally:
        for choice in choices:
            close = getattr(choice, "close", None)
            if close is not None:
                close()


class _Render:
    """Turns generation events into reply pieces, in the worker thread (decoding logprob tokens and
    serialising chunks off the event loop)."""

    def __init__(self, tokenizer: Any, cid: str, created: int, model: str, stream: bool, logprobs: bool,
                 tool_format: tools.ToolFormat | None = None) -> None:
        self.tokenizer, self.cid, self.created, self.model = tokenizer, cid, created, model
        self.stream, self.logprobs = stream, logprobs
        self.tool_format = tool_format  # set: the text is parsed for tool calls (see _tool_pieces)
        self.tool_calls = 0  # calls streamed so far
        self.content_chunk = proto.ContentChunks(cid, created, model)

    def _tool_pieces(self, events: Iterator[GenerationEvent]) -> Iterator[tuple[GenerationEvent, Any]]:
        """Streaming with tools: content and ``delta.tool_calls`` chunks from the parsed text."""
        parser = tools.ToolCallStream(self.tool_format)
        for event in events:
            deltas = parser.feed(event.text)
            if isinstance(event, FinishEvent):
                deltas += parser.finish()
                self.tool_calls = len(parser.calls)
            yield event, b"".join(proto.sse(proto.chunk(self.cid, self.created, self.model, d)) for d in deltas)

    def _token(self, token_id: int) -> str:
        if token_id < 0 or self.tokenizer is None:
            return ""
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def logprob_entry(self, event: TokenEvent) -> dict:
        top = [(self._token(t), lp) for t, lp in event.top_logprobs]
        logprob = event.logprob if event.logprob is not None else 0.0
        return proto.logprob_entry(self._token(event.token_id), logprob, top)

    def __call__(self, events: Iterator[GenerationEvent]) -> Iterator[tuple[GenerationEvent, Any]]:
        """``(event, piece)``: piece is SSE bytes (or b"") when streaming, else the logprob entry or None."""
        if self.stream and self.tool_format is not None:
            yield from self._tool_pieces(events)
            return
        if self.stream and not self.logprobs:  # the common stream: one content chunk per text
            content_chunk = self.content_chunk
            for event in events:
                yield event, content_chunk(event.text) if event.text else b""
            return
        for event in events:
            if isinstance(event, FinishEvent):
                piece = b""
                if self.stream and event.text:
                    piece = self.content_chunk(event.text)
                yield event, piece
                continue
            entry = self.logprob_entry(event) if self.logprobs else None
            if not self.stream:
                yield event, entry
            elif entry is None and event.text:
                yield event, self.content_chunk(event.text)
            elif entry is not None:
                data = proto.chunk(self.cid, self.created, self.model, {"content": event.text}, None,
                                   [entry] if entry is not None else None)
                yield event, proto.sse(data)
            else:
                yield event, b""


class OpenAIServing:
    """The OpenAI-compatible endpoints over one ``ServingContext``."""

    def __init__(self, context: ServingContext) -> None:
        self.context = context

    async def models(self, request: Request) -> Response:
        try:
            check_api_key(request, self.context.api_key)
        except proto.OpenAIError as error:
            return error.response()
        return JSONResponse(proto.model_list(self.context.model_name))

    async def chat_completions(self, request: Request) -> Response:
        ctx = self.context
        timer = None
        try:
            check_api_key(request, ctx.api_key)
            if not ctx.is_ready():
                raise proto.not_ready()
            body = await read_body(request, ctx.max_body_bytes)
            if body is None:
                raise proto.OpenAIError(413, f"The body is larger than {ctx.max_body_bytes} bytes.",
                                        code="body_too_large")
            parsed = proto.parse_chat_completion(body)
            if parsed.model != ctx.model_name:
                raise proto.model_not_found(parsed.model, ctx.model_name)
            tokenizer = getattr(ctx.generator, "tokenizer", None)
            prompt, tool_format = self._prompt(parsed, tokenizer)
            params = generation_params(parsed, ctx.params(), tool_format, len(tokenizer) if tokenizer else None)
            await self._check_constraint(params)
            await self._check_fits(prompt, params)
            ticket = ctx.admission.try_enter()
            if ticket is None:
                stats = ctx.admission.stats()
                raise proto.rate_limited(f"Too many requests: {stats['running']} running and {stats['waiting']} "
                                         "waiting; retry after the Retry-After seconds.", ctx.retry_after_sec)
        except proto.OpenAIError as error:
            self._count_refusal(error)
            return error.response()
        timer = ctx.metrics.request(ENDPOINT)
        @once
        async def release(outcome: Outcome, finish: FinishEvent | None = None) -> None:
            ticket.release()
            timer.finish(outcome, finish.prompt_tokens if finish else 0, finish.completion_tokens if finish else None)
            if ctx.on_finished is not None:
                try:
                    await ctx.on_finished(outcome)
                except Exception:
                    ctx.logger.exception("the finish hook failed")

        try:
            if not ticket.granted and not await unless_disconnected(request, ticket.wait):
                await release(Outcome.DISCONNECTED_BEFORE_STREAMING)
                return Response(status_code=499)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await release(Outcome.DISCONNECTED_BEFORE_STREAMING)
            raise
        cid = proto.completion_id(uuid.uuid4().hex)
        parse_calls = tool_format if parsed.tools and parsed.tool_choice != "none" else None
        render = _Render(getattr(ctx.generator, "tokenizer", None), cid, int(time.time()), ctx.model_name,
                         parsed.stream, parsed.logprobs, parse_calls)

        def make(should_stop: Callable[[], bool]) -> Iterator[tuple[GenerationEvent, Any]]:
            if parsed.n == 1:
                return render(generation_events(ctx.generator, prompt, params, should_stop, parsed.top_logprobs_count))
            return started_together([render(generation_events(
                ctx.generator, prompt, choice_params(params, choice), should_stop, parsed.top_logprobs_count))
                for choice in range(parsed.n)])

        if parsed.stream:
            response = EventStreamResponse(self._stream(make, render, parsed, timer, release))  # n == 1
            response.add_close_callback(lambda: release(Outcome.DISCONNECTED_BEFORE_STREAMING))
            return response
        try:
            result: list = []
            completed = await unless_disconnected(request, lambda: self._collect(make, timer, result))
        except Exception:
            ctx.logger.exception("generation failed")
            await release(Outcome.ERROR)
            return proto.server_error("The generation failed; see the server log.").response()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await release(Outcome.DISCONNECTED_WHILE_STREAMING)
            raise
        if not completed or not result:
            await release(Outcome.DISCONNECTED_WHILE_STREAMING)
            return Response(status_code=499)
        choices = []
        for index, (text, entries, finish) in enumerate(result):
            content, calls = (text, []) if parse_calls is None else tools.parse_tool_calls(text, parse_calls)
            reason = "tool_calls" if calls and finish.finish_reason.value == "stop" else finish.finish_reason.value
            choices.append(proto.choice(index, content, reason, entries if parsed.logprobs else None, calls))
        finish = FinishEvent("", result[-1][2].finish_reason, result[-1][2].prompt_tokens,
                             sum(f.completion_tokens for _, _, f in result),
                             min(f.cached_tokens for _, _, f in result))  # each choice prefilled its own
        await release(Outcome.SUCCESS, finish)
        return JSONResponse(proto.completion(cid, render.created, ctx.model_name, "", "", finish.prompt_tokens,
                                             finish.completion_tokens, choices=choices,
                                             cached_tokens=finish.cached_tokens))

    def _prompt(self, parsed: proto.ChatCompletionRequest, tokenizer: Any
                ) -> tuple[AbstractChatPrompt, tools.ToolFormat | None]:
        """The request's prompt, and its model's tool-call format when the request uses tools."""
        if not tools.uses_tools(parsed):
            return prompt_from_messages(parsed, self.context.new_prompt), None
        prompt = tools.tool_prompt(parsed, tokenizer)
        return prompt, tools.tool_format(tokenizer.chat_template)

    async def _check_constraint(self, params: GenerationParams) -> None:
        if params.constraint is None:
            return
        try:  # compiles the schema (once; kept): not on the event loop
            await anyio.to_thread.run_sync(check_constraint, self.context.generator, params.constraint)
        except ConstraintError as error:
            raise proto.bad_request(str(error), param="response_format", code="unsupported_schema") from None

    async def _check_fits(self, prompt: AbstractChatPrompt, params: GenerationParams) -> None:
        try:  # tokenizes the history: not on the event loop (unless the generator never blocks)
            await call_for(self.context.generator, check_prompt_fits, self.context.generator, prompt, params)
        except PromptTooLongError as error:
            raise proto.bad_request(str(error), param="messages", code="context_length_exceeded") from None

    def _batches(self, make: Callable) -> AsyncIterator[list]:
        """The generation's events in batches (``_driver.drive``): in a worker thread, or on the loop for a
        generator that never blocks."""
        return drive(make, self.context.limiter(), inline=runs_inline(self.context.generator))

    async def _collect(self, make: Callable, timer: Any, result: list) -> None:
        """``result``: one ``(text, logprob entries, finish)`` per choice (each ends at its FinishEvent)."""
        text: list[str] = []
        entries: list = []
        async with contextlib.aclosing(self._batches(make)) as batches:
            async for batch in batches:
                tokens = 0
                for event, entry in batch:
                    text.append(event.text)
                    if isinstance(event, FinishEvent):
                        result.append(("".join(text), entries, event))
                        text, entries = [], []
                    else:
                        tokens += 1
                        if entry is not None:
                            entries.append(entry)
                if tokens:
                    timer.token(tokens)

    async def _stream(self, make: Callable, render: _Render, parsed: proto.ChatCompletionRequest, timer: Any,
                      release: Callable) -> AsyncIterator[bytes]:
        cid, created, model = render.cid, render.created, render.model
        outcome, finish = Outcome.ERROR, None
        try:
            yield proto.sse(proto.chunk(cid, created, model, {"role": "assistant", "content": ""}))
            # closed here, not by the garbage collector: the model stops before the slot is released
            async with contextlib.aclosing(self._batches(make)) as batches:
                async for batch in batches:
                    if not batch:
                        continue
                    tokens = len(batch)
                    if isinstance(batch[-1][0], FinishEvent):  # the one finish event ends the stream
                        finish = batch[-1][0]
                        tokens -= 1
                    if tokens:
                        timer.token(tokens)
                    data = b"".join([piece for _, piece in batch])
                    if data:
                        yield data
            if finish is None:  # a generator that ended without its finish event
                raise RuntimeError("the generator ended without a finish event")
            reason = finish.finish_reason.value
            if render.tool_calls and reason == "stop":
                reason = "tool_calls"
            tail = proto.sse(proto.chunk(cid, created, model, {}, reason))
            if parsed.include_usage:
                tail += proto.sse(proto.usage_chunk(cid, created, model, finish.prompt_tokens,
                                                    finish.completion_tokens, finish.cached_tokens))
            yield tail + proto.DONE_LINE
            outcome = Outcome.SUCCESS
        except (anyio.get_cancelled_exc_class(), GeneratorExit):
            outcome = Outcome.DISCONNECTED_WHILE_STREAMING
            raise
        except Exception:
            self.context.logger.exception("generation failed while streaming")
            error = proto.server_error("The generation failed while streaming; see the server log.")
            yield proto.sse(error.body())
        finally:
            with anyio.CancelScope(shield=True):
                await release(outcome, finish)

    def _count_refusal(self, error: proto.OpenAIError) -> None:
        reason = {401: RejectReason.UNAUTHORIZED, 429: RejectReason.QUEUE_FULL, 503: RejectReason.NOT_READY}.get(
            error.status_code, RejectReason.BAD_REQUEST)
        if error.code == "context_length_exceeded":
            reason = RejectReason.PROMPT_TOO_LONG
        outcome = {RejectReason.UNAUTHORIZED: Outcome.UNAUTHORIZED, RejectReason.QUEUE_FULL: Outcome.REJECTED,
                   RejectReason.NOT_READY: Outcome.NOT_READY}.get(reason, Outcome.BAD_REQUEST)
        self.context.metrics.count_rejection(ENDPOINT, reason)
        self.context.metrics.count_outcome(ENDPOINT, outcome)
