"""HTTP pieces shared by ChatStream and the request handlers: body reading, validation, responses."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import json
import logging
import re
import weakref
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from .locale import Locale

FINISH_TOKEN = "<::EOS::>"
MESSAGE_ID_HEADER = "X-ChatStream-Last-Generated-Message-Id"
DEV_TOOL_HEADER = "X-ChatStream-API-DevTool-Enabled"
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
STREAM_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache", **NOSNIFF}
DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_SEND_TIMEOUT_SEC = 10.0
PARAM_ALIASES = {"top_k_value": "top_k", "top_p_value": "top_p"}  # the 0.3 names of generation parameters


def error_response(status_code: int, error: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A JSON error: ``{"success": false, "error": <code>, "detail": <what to do>}``."""
    return JSONResponse({"success": False, "error": error, "detail": detail}, status_code,
                        headers={**NOSNIFF, **(headers or {})})


def bearer_matches(request: Request, key: str) -> bool:
    """Whether ``request`` carries ``key`` as ``Authorization: Bearer KEY`` (compared in constant time)."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode())


async def call_maybe_async(func: Callable[..., Any], *args: Any) -> Any:
    """Call a callback that may be a plain function or a coroutine function."""
    result = func(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class _SendWatchdog:
    """Ends a stream (cancels ``scope``) when one send has not returned within ``timeout`` seconds.

    One timer per stream, re-armed lazily when it fires (to the running send's start + ``timeout``), instead
    of a cancel scope and a timer per chunk. The stream marks each send itself (``since`` = the loop's clock
    before it, None after it; ``ChatStreamingResponse.stream_response``): a chunk costs two attribute writes
    and a clock read, with no wrapper coroutine.
    """

    def __init__(self, timeout: float, scope: anyio.CancelScope) -> None:
        self._timeout, self._scope = timeout, scope
        self.loop = asyncio.get_running_loop()
        self.since: float | None = None  # when the running send began; None between sends
        self.fired = False
        self._timer = self.loop.call_later(timeout, self._check)

    def _check(self) -> None:
        since, now = self.since, self.loop.time()
        if since is not None and now - since >= self._timeout:
            self.fired = True
            self._scope.cancel()
            return
        self._timer = self.loop.call_at((now if since is None else since) + self._timeout, self._check)

    def stop(self) -> None:
        self._timer.cancel()


_logger = logging.getLogger("chatstream")
_dropped_tasks: set[asyncio.Task] = set()  # release tasks of dropped responses, kept until they ran


async def _run_callbacks(callbacks: list[Callable[[], Awaitable[None]]]) -> None:
    for callback in callbacks:
        try:
            await callback()
        except Exception:
            _logger.exception("a close callback of a dropped response failed")


def _release_dropped(loop: asyncio.AbstractEventLoop | None, callbacks: list) -> None:
    """weakref.finalize hook: the response was garbage-collected without being sent; run its close callbacks."""
    if loop is None or loop.is_closed() or not callbacks:
        return

    def start() -> None:
        task = loop.create_task(_run_callbacks(callbacks))
        _dropped_tasks.add(task)
        task.add_done_callback(_dropped_tasks.discard)

    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
        loop.call_soon_threadsafe(start)


class ChatStreamingResponse(StreamingResponse):
    """A text/plain stream that closes its body and runs its close callbacks however it ends.

    Closing the body (an async generator) right away matters when the client leaves while a chunk is
    being sent: the generator is then suspended at a ``yield`` and would otherwise only be finalised
    by the garbage collector, so its own clean-up (stop the model, save or roll back the history)
    would run late. Close callbacks run even when the body was never iterated, and also when the
    response is dropped without ever being sent (they are then scheduled on the event loop the
    response was made on, once it is garbage-collected).

    Each chunk must be handed to the client within ``send_timeout_sec`` seconds: a client that stops
    reading fills the socket buffers and then blocks the send; the stream is then ended there (the
    connection is closed without the final chunk) and the close callbacks free its slot.
    """

    media_type = "text/plain"

    def __init__(self, content: AsyncIterable[str], headers: Mapping[str, str] | None = None,
                 send_timeout_sec: float | None = DEFAULT_SEND_TIMEOUT_SEC) -> None:
        super().__init__(content, headers={**STREAM_HEADERS, **(headers or {})})
        self._close_callbacks: list[Callable[[], Awaitable[None]]] = []
        self.send_timeout_sec = send_timeout_sec
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self._finalizer = weakref.finalize(self, _release_dropped, loop, self._close_callbacks)

    def add_close_callback(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._close_callbacks.append(callback)

    hold_last_chunk = False  # probe mode: each chunk waits for the next, the last for the body's end (the flush)
    _watchdog: _SendWatchdog | None = None  # set while __call__ runs with a send time-out

    async def stream_response(self, send: Send) -> None:
        # Starlette's loop, with each send marked for the watchdog inline (no wrapper coroutine per chunk)
        dog = self._watchdog
        clock = dog.loop.time if dog is not None else None

        async def watched(message: dict) -> None:  # the first and the last sends
            if dog is not None:
                dog.since = clock()
            await send(message)
            if dog is not None:
                dog.since = None

        await watched({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        hold, held = self.hold_last_chunk, None
        async for chunk in self.body_iterator:
            if not isinstance(chunk, (bytes, memoryview)):
                chunk = chunk.encode(self.charset)
            if hold:  # send the one before; keep this one until the next (or the body's end)
                chunk, held = held, chunk
                if chunk is None:
                    continue
            message = {"type": "http.response.body", "body": chunk, "more_body": True}
            if dog is not None:
                dog.since = clock()
            await send(message)
            if dog is not None:
                dog.since = None
        # the body ended: the generation's clean-up (which writes the probe segment) has run
        if held is not None:
            await watched({"type": "http.response.body", "body": held, "more_body": True})
        await watched({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._finalizer.detach()  # sent: the callbacks run below, not at garbage collection
        timeout = self.send_timeout_sec
        try:
            if timeout is None:
                await super().__call__(scope, receive, send)
            else:
                with anyio.CancelScope() as cancel_scope:
                    self._watchdog = watchdog = _SendWatchdog(timeout, cancel_scope)
                    try:
                        await super().__call__(scope, receive, send)
                    finally:
                        watchdog.stop()
                        self._watchdog = None
                if watchdog.fired:
                    _logger.warning("a client read nothing for %ss; its stream was ended", timeout)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    close = getattr(self.body_iterator, "aclose", None)
                    if close is not None:
                        await close()
                finally:
                    for callback in self._close_callbacks:
                        await callback()

    @classmethod
    def adopt(cls, response: StreamingResponse) -> ChatStreamingResponse:
        """Wrap a plain StreamingResponse (from a 0.3-style custom handler) so it gets close callbacks."""
        if isinstance(response, cls):
            return response
        adopted = cls(response.body_iterator)
        adopted.status_code = response.status_code
        adopted.raw_headers = [*response.raw_headers]
        adopted.background = response.background
        for key, value in STREAM_HEADERS.items():
            if key.lower() not in adopted.headers:
                adopted.headers[key] = value
        return adopted


ESCAPE_TOKEN = "<::ESC::>"


def escape_frame(text: str) -> str:
    """An answer made safe to frame with ``<::EOS::>``: a literal ``<::EOS::>`` or ``<::ESC::>`` inside it
    becomes ``<::ESC::>EOS::>`` / ``<::ESC::>ESC::>``. Answers without either are sent as they are (the 0.3
    format); ``unescape_frame`` (and the web page) turn every ``<::ESC::>`` back into ``<::``."""
    if "<::E" not in text:
        return text
    return _ESCAPED.sub(lambda match: ESCAPE_TOKEN + match.group(1) + "::>", text)


def unescape_frame(frame: str) -> str:
    """The answer a frame of the stream carries (the inverse of ``escape_frame``)."""
    return frame.replace(ESCAPE_TOKEN, "<::")


_ESCAPED = re.compile(r"<::(EOS|ESC)::>")


def json_content_type_error(request: Request, body: bytes | str | None, loc: Locale) -> JSONResponse | None:
    """A 415 unless the request says its body is JSON (a body-less request may say nothing).

    An HTML form or ``navigator.sendBeacon`` from another page can only send form or text/plain bodies
    without a CORS preflight, so asking for ``application/json`` keeps them from acting on a session.
    """
    content_type = request.headers.get("content-type")
    if content_type is None and not body:
        return None
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return None
    return error_response(415, "unsupported_media_type", loc.t("unsupported_media_type", given=content_type or "-"))


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is (or announces itself) larger than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def wait_for_disconnect(request: Request) -> None:
    """Return when the client goes away (the body must already be read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, wait: Callable[[], Awaitable[Any]]) -> bool:
    """Await ``wait()`` unless the client goes away first (``wait()`` is then cancelled).

    True when ``wait()`` completed. ``wait`` must be cancellation-safe (``asyncio.Lock.acquire``,
    ``Ticket.wait``): a cancelled wait must leave nothing held.
    """
    completed, error = False, None
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            await wait_for_disconnect(request)
            group.cancel_scope.cancel()

        group.start_soon(watch)
        try:
            await wait()
            completed = True
        except Exception as raised:  # re-raised as itself below, not inside the task group's ExceptionGroup
            error = raised
        finally:
            group.cancel_scope.cancel()
    if error is not None:
        raise error
    return completed


def parse_json_object(body: bytes | str, loc: Locale) -> dict | JSONResponse:
    """The body as a JSON object, or a 400 saying what is wrong with it."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        return error_response(400, "malformed_json", loc.t("malformed_json", reason=str(error)))
    except RecursionError:
        return error_response(400, "malformed_json", loc.t("malformed_json", reason="nested too deeply"))
    if not isinstance(data, dict):
        return error_response(400, "body_not_object", loc.t("body_not_object", kind=type(data).__name__))
    if isinstance(body, bytes) and body.isascii() and b"\\u" not in body:
        return data  # ASCII text holds no surrogate: only a \u escape could have made one
    try:  # a lone surrogate ("\ud800") is valid JSON but no text: nothing could encode, tokenise or store it
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return error_response(400, "malformed_json", loc.t("malformed_json", reason="a string holds a lone "
                                                                                     "UTF-16 surrogate"))
    except RecursionError:
        return error_response(400, "malformed_json", loc.t("malformed_json", reason="nested too deeply"))
    return data


STREAM_MODES = ("full", "delta")  # /chat_stream's chunks: the whole answer so far (0.3), or only the new text


@dataclass(frozen=True)
class ChatRequest:
    user_input: str | None
    regenerate: bool
    stream_mode: str = "full"  # one of STREAM_MODES

    @property
    def delta(self) -> bool:
        return self.stream_mode == "delta"


def parse_chat_request(body: bytes | str, loc: Locale) -> ChatRequest | JSONResponse:
    """``{"user_input": str, "regenerate": bool, "stream_mode": "full" | "delta"}`` checked; user_input may be
    left out only to regenerate; ``stream_mode`` left out is "full" (the 0.3 protocol, byte for byte).

    A ``regenerate`` that is not a JSON boolean (0.3's ``web_server_edit_request.py`` sends the string
    ``"False"``) means false, as in ChatStream 0.3, with a warning: only ``true`` regenerates.
    """
    data = parse_json_object(body, loc)
    if isinstance(data, JSONResponse):
        return data
    regenerate = data.get("regenerate", False)
    if not isinstance(regenerate, bool):
        logging.getLogger("chatstream").warning(
            "'regenerate' (=%s) is not a JSON boolean; taken as false, as ChatStream 0.3 did. Send true to "
            "regenerate the last answer.", json.dumps(regenerate, ensure_ascii=False)[:40])
        regenerate = False
    user_input = data.get("user_input")
    if user_input is None and not regenerate:
        return error_response(400, "missing_user_input", loc.t("missing_user_input"))
    if user_input is not None and not isinstance(user_input, str):
        kind = type(user_input).__name__
        return error_response(400, "user_input_not_string", loc.t("user_input_not_string", kind=kind))
    stream_mode = data.get("stream_mode", "full")
    if stream_mode not in STREAM_MODES:
        given = json.dumps(stream_mode, ensure_ascii=False)[:40]
        return error_response(400, "bad_stream_mode", loc.t("bad_stream_mode", given=given))
    return ChatRequest(user_input, regenerate, stream_mode)
