"""The OpenAI chat-completions wire format: request models validated once at the edge, errors, and replies.

``parse_chat_completion(body)`` turns a request body into a ``ChatCompletionRequest`` or an ``OpenAIError``
(400 naming the field). Only what ChatStream can honour is accepted: a field it does not support (tools,
audio, ...) is refused by name instead of being ignored. Replies are built as plain dicts (one
per streamed token, so no model validation on the way out). See https://platform.openai.com/docs/api-reference/chat.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import JSONResponse

from ..engine.events import MAX_TOP_LOGPROBS

CHAT_COMPLETIONS_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
DONE_LINE = b"data: [DONE]\n\n"
MAX_CHOICES = 8  # the most `n` a request may ask for


class OpenAIError(Exception):
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with its HTTP status."""

    def __init__(self, status_code: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code, self.message, self.type, self.param, self.code = status_code, message, type, param, code
        self.headers = dict(headers or {})

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), self.status_code, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, "invalid_request_error", param, code)


def invalid_api_key() -> OpenAIError:
    return OpenAIError(401, "Incorrect or missing API key: send it as `Authorization: Bearer <key>`.",
                       "invalid_request_error", None, "invalid_api_key")


def model_not_found(model: str, served: str) -> OpenAIError:
    return OpenAIError(404, f"The model `{model}` does not exist; this server serves `{served}` (GET /v1/models).",
                       "invalid_request_error", "model", "model_not_found")


def rate_limited(message: str, retry_after_sec: int) -> OpenAIError:
    return OpenAIError(429, message, "requests", None, "rate_limit_exceeded", {"Retry-After": str(retry_after_sec)})


def not_ready() -> OpenAIError:
    return OpenAIError(503, "The model is still loading; retry shortly.", "server_error", None, "model_not_ready",
                       {"Retry-After": "1"})


def server_error(message: str) -> OpenAIError:
    return OpenAIError(500, message, "server_error", None, "internal_error")


# -- the request -----------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class FunctionCall(_Strict):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None  # accepted and ignored, as most servers do
    tool_calls: list[ToolCall] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a tool message: the call it answers

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class JsonSchemaFormat(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: str | None = None
    json_schema: dict = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class FunctionDefinition(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: str | None = None
    parameters: dict = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields ChatStream supports; anything else is refused by name (see ``parse_chat_completion``)."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] = 1
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None  # accepted; several calls are parsed when the model makes them
    user: str | None = None  # accepted and ignored

    @property
    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return tuple(s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s)

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def top_logprobs_count(self) -> int | None:
        """``logprobs`` for the generator: None (not asked) or the number of alternatives per token."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


def _param(loc: tuple) -> str | None:
    names = [str(part) for part in loc if not str(part).startswith(("function-", "list[", "str", "int"))]
    return ".".join(names) or None


def parse_chat_completion(body: bytes | str) -> ChatCompletionRequest:
    """The request, validated; raises ``OpenAIError`` (400) naming the field that is wrong or unsupported."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise bad_request(f"The body is not valid JSON ({error}); send a JSON object.") from None
    if not isinstance(data, dict):
        raise bad_request(f"The body must be a JSON object, got a JSON {type(data).__name__}.")
    unsupported = sorted(set(data) - set(ChatCompletionRequest.model_fields))
    if unsupported:
        raise bad_request(f"Unsupported field(s) {unsupported}: this server does not implement them; remove them "
                          f"from the request. Supported: {sorted(ChatCompletionRequest.model_fields)}.",
                          param=unsupported[0], code="unsupported_parameter")
    try:
        request = ChatCompletionRequest.model_validate(data)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        param = _param(first["loc"])
        where = f"`{param}`: " if param else ""
        raise bad_request(f"{where}{first['msg']}", param=param) from None
    _check(request)
    return request


def _check(request: ChatCompletionRequest) -> None:
    """What the field types cannot say."""
    if request.response_format is not None and request.response_format.type == "json_schema" and \
            request.response_format.json_schema is None:
        raise bad_request("`response_format` of type json_schema needs `json_schema` ({name, schema, strict}).",
                          param="response_format")
    if request.n > 1 and request.stream:
        raise bad_request("`n` > 1 is not streamed by this server yet; send `stream: false` or `n: 1`.", param="n")
    if request.tool_choice is not None and not request.tools:
        raise bad_request("`tool_choice` needs `tools`.", param="tool_choice")
    if isinstance(request.tool_choice, NamedToolChoice) and request.tool_choice.function.name not in \
            {tool.function.name for tool in request.tools or []}:
        raise bad_request(f"`tool_choice` names `{request.tool_choice.function.name}`, which is not in `tools`.",
                          param="tool_choice")
    if request.tools and request.response_format is not None and request.response_format.type != "text":
        raise bad_request("`response_format` and `tools` cannot be combined here; send one of them.",
                          param="response_format")
    for message in request.messages:
        if message.role == "tool" and message.tool_call_id is None:
            raise bad_request("a `tool` message needs `tool_call_id`.", param="messages")
        if message.content is None and not (message.role == "assistant" and message.tool_calls):
            raise bad_request(f"a {message.role} message needs `content`.", param="messages")
    if isinstance(request.stop, list) and len(request.stop) > 4:
        raise bad_request(f"`stop` holds {len(request.stop)} strings; at most 4 are allowed.", param="stop")
    if request.top_logprobs is not None and not request.logprobs:
        raise bad_request("`top_logprobs` needs `logprobs: true`.", param="top_logprobs")
    if request.stream_options is not None and not request.stream:
        raise bad_request("`stream_options` is only allowed with `stream: true`.", param="stream_options")
    if request.messages[-1].role not in ("user", "tool"):
        raise bad_request(f"the last message must be the user's or a tool result (got {request.messages[-1].role!r});"
                          " this server answers a user message.", param="messages")


# -- replies ---------------------------------------------------------------------------------------


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def logprob_entry(token: str, logprob: float, top: list[tuple[str, float]]) -> dict:
    """One ``choices[0].logprobs.content`` item (``bytes`` as OpenAI gives them: the token's UTF-8)."""
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()),
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top]}


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict:
    """OpenAI's usage object; ``cached_tokens``: prompt tokens the prefix cache supplied (as OpenAI reports its own)."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def chunk(cid: str, created: int, model: str, delta: dict, finish_reason: str | None = None,
          logprobs: list | None = None, index: int = 0) -> dict:
    choice: dict[str, Any] = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [choice]}


def usage_chunk(cid: str, created: int, model: str, prompt_tokens: int, completion_tokens: int,
                cached_tokens: int = 0) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
            "usage": usage(prompt_tokens, completion_tokens, cached_tokens)}


_json_string = json.encoder.encode_basestring  # json.dumps(text, ensure_ascii=False) for a str, without an encoder


class ContentChunks:
    """``sse(chunk(cid, created, model, {"content": text}))`` for one stream, without a dict and a whole
    ``json.dumps`` per token: the bytes around the content are made once, only the text is encoded each time."""

    def __init__(self, cid: str, created: int, model: str) -> None:
        marker = "\x00"
        line = sse(chunk(cid, created, model, {"content": marker}))
        self._head, self._tail = line.split(json.dumps(marker).encode(), 1)

    def __call__(self, text: str) -> bytes:
        return self._head + _json_string(text).encode() + self._tail


def sse(data: dict) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def choice(index: int, text: str | None, finish_reason: str, logprobs: list | None = None,
           tool_calls: list[dict] | None = None) -> dict:
    """One ``choices`` item of a non-streamed reply (``tool_calls`` only when the model called tools)."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"index": index, "message": message, "logprobs": {"content": logprobs} if logprobs is not None else None,
            "finish_reason": finish_reason}


def completion(cid: str, created: int, model: str, text: str, finish_reason: str, prompt_tokens: int,
               completion_tokens: int, logprobs: list | None = None, choices: list[dict] | None = None,
               cached_tokens: int = 0) -> dict:
    """The reply: one choice from ``text`` (or the ``choices`` given, for ``n`` > 1 or tool calls)."""
    return {
        "id": cid, "object": "chat.completion", "created": created, "model": model,
        "choices": choices if choices is not None else [choice(0, text, finish_reason, logprobs)],
        "usage": usage(prompt_tokens, completion_tokens, cached_tokens),
    }


def model_list(model: str, created: int | None = None) -> dict:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": created or int(time.time()),
                                        "owned_by": "chatstream"}]}
