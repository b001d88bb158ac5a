"""Structured outputs and tool calls for the OpenAI endpoint: constraints, prompts with tools, call parsing.

``response_constraint`` turns ``response_format`` (and ``tool_choice`` ``required`` or a named function)
into the engine's ``Constraint``. ``tool_format`` reads from a chat template how its model writes tool
calls (``ToolFormat``); ``ToolChatPrompt`` renders OpenAI messages (tool results, earlier calls) and the
tools with ``apply_chat_template(..., tools=...)``. ``parse_tool_calls`` finds the calls in a whole
answer and ``ToolCallStream`` does it on streamed text, giving OpenAI's ``delta.tool_calls`` pieces.
"""

from __future__ import annotations

import copy
import enum
import json
import re
import uuid
from typing import Any

from ..engine.chat_prompt import ChatContent, ChatPromptFromTemplate
from ..engine.constraints import JSON_OPTIONS, Constraint
from . import openai_protocol as proto


class ToolFormat(str, enum.Enum):
    """How a model family writes a tool call: ``hermes`` (Hermes, Qwen 2/2.5/3, SmolLM3:
    ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``) or ``llama3_json`` (Llama 3.1/3.2:
    one JSON object ``{"name": ..., "parameters": {...}}``)."""

    HERMES = "hermes"
    LLAMA3_JSON = "llama3_json"

    @property
    def arguments_key(self) -> str:
        return "arguments" if self is ToolFormat.HERMES else "parameters"


HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"


def tool_format(chat_template: str | None) -> ToolFormat | None:
    """The tool-call format of a chat template, or None when the template does not render ``tools``."""
    if not chat_template or not re.search(r"\btools\b", chat_template):
        return None
    if HERMES_OPEN in chat_template:
        return ToolFormat.HERMES
    if "<|python_tag|>" in chat_template or "ipython" in chat_template:
        return ToolFormat.LLAMA3_JSON
    return None


def _call_schema(tool: proto.Tool, fmt: ToolFormat) -> dict:
    return {"type": "object", "properties": {"name": {"const": tool.function.name},
                                             fmt.arguments_key: tool.function.parameters},
            "required": ["name", fmt.arguments_key], "additionalProperties": False}


def _chosen_tools(request: proto.ChatCompletionRequest) -> list[proto.Tool]:
    choice = request.tool_choice
    tools = request.tools or []
    if isinstance(choice, proto.NamedToolChoice):
        return [t for t in tools if t.function.name == choice.function.name]
    return tools


def response_constraint(request: proto.ChatCompletionRequest, fmt: ToolFormat | None) -> Constraint | None:
    """The constraint a request asks for: its ``response_format`` (json_object, json_schema) or, with tools
    and ``tool_choice`` ``required`` or a named function, one call to a listed function whose arguments
    match its parameters schema, in the model's format. None: the answer is free."""
    form = request.response_format
    if form is not None and form.type == "json_object":
        return Constraint.json_object()
    if form is not None and form.type == "json_schema":
        return Constraint.json_schema(form.json_schema.json_schema)
    choice = request.tool_choice
    if not request.tools or not (choice == "required" or isinstance(choice, proto.NamedToolChoice)):
        return None
    schemas = [_call_schema(tool, fmt) for tool in _chosen_tools(request)]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    if fmt is ToolFormat.HERMES:
        schema = {**schema, "x-guidance": JSON_OPTIONS}  # compact JSON inside the Lark grammar too
        grammar = f'start: "{HERMES_OPEN}\\n" call "\\n{HERMES_CLOSE}"\ncall: %json {json.dumps(schema)}'
        return Constraint.lark(grammar)
    return Constraint.json_schema(schema)


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _call(data: Any, fmt: ToolFormat) -> dict | None:
    """An OpenAI tool call from a parsed JSON object, or None when it is not a call."""
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = data.get(fmt.arguments_key, data.get("arguments", {}))
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": new_call_id(), "type": "function", "function": {"name": data["name"], "arguments": text}}


def parse_tool_calls(text: str, fmt: ToolFormat) -> tuple[str | None, list[dict]]:
    """``(content, tool_calls)`` of a whole answer: the calls it makes (a block that does not parse stays
    text) and the text around them (None when only calls were made)."""
    calls: list[dict] = []
    if fmt is ToolFormat.HERMES:
        content, rest = [], text
        while HERMES_OPEN in rest:
            before, _, after = rest.partition(HERMES_OPEN)
            body, closed, rest = after.partition(HERMES_CLOSE)
            try:
                call = _call(json.loads(body), fmt)
            except ValueError:
                call = None
            if call is None:
                content.append(before + HERMES_OPEN + body + closed)
                continue
            content.append(before)
            calls.append(call)
        content.append(rest)
        joined = "".join(content).strip()
        return (joined or None) if calls else text, calls
    stripped = text.strip().removeprefix("<|python_tag|>")
    try:
        data = json.loads(stripped)
    except ValueError:
        return text, []
    items = data if isinstance(data, list) else [data]
    found = [_call(item, fmt) for item in items]
    if found and all(found):
        return None, found  # type: ignore[return-value]
    return text, []


class ToolCallStream:
    """Streamed text in, OpenAI stream deltas out: content passes through (a possible ``<tool_call>`` start
    is held back), each complete call becomes ``delta.tool_calls`` pieces (index, id, type, name, then the
    arguments' JSON in fragments). The Llama 3 JSON format is known only at the end: its text is held."""

    FRAGMENT = 16  # characters of arguments per streamed fragment

    def __init__(self, fmt: ToolFormat) -> None:
        self.fmt = fmt
        self.buffer = ""
        self.calls: list[dict] = []

    def _call_deltas(self, call: dict) -> list[dict]:
        index = len(self.calls)
        self.calls.append(call)
        function = call["function"]
        deltas = [{"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                   "function": {"name": function["name"], "arguments": ""}}]}]
        arguments = function["arguments"]
        for start in range(0, len(arguments), self.FRAGMENT):
            piece = arguments[start:start + self.FRAGMENT]
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        return deltas

    def feed(self, text: str) -> list[dict]:
        self.buffer += text
        if self.fmt is not ToolFormat.HERMES:
            return []
        deltas: list[dict] = []
        while True:
            start = self.buffer.find(HERMES_OPEN)
            if start < 0:
                keep = _partial_suffix(self.buffer, HERMES_OPEN)
                if len(self.buffer) > keep:
                    deltas.append({"content": self.buffer[: len(self.buffer) - keep]})
                    self.buffer = self.buffer[len(self.buffer) - keep:]
                return deltas
            if start:
                deltas.append({"content": self.buffer[:start]})
                self.buffer = self.buffer[start:]
            end = self.buffer.find(HERMES_CLOSE)
            if end < 0:
                return deltas
            body = self.buffer[len(HERMES_OPEN):end]
            self.buffer = self.buffer[end + len(HERMES_CLOSE):]
            try:
                call = _call(json.loads(body), self.fmt)
            except ValueError:
                call = None
            if call is None:
                deltas.append({"content": HERMES_OPEN + body + HERMES_CLOSE})
            else:
                deltas.extend(self._call_deltas(call))

    def finish(self) -> list[dict]:
        """The deltas of what is left at the end of the answer."""
        rest, self.buffer = self.buffer, ""
        if self.fmt is ToolFormat.HERMES:
            return [{"content": rest}] if rest else []
        content, calls = parse_tool_calls(rest, self.fmt)
        deltas = [d for call in calls for d in self._call_deltas(call)]
        return deltas or ([{"content": content}] if content else [])


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of ``text`` that is a start of ``marker``."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


class ToolContent(ChatContent):
    """A message with its OpenAI fields (tool calls, the call a tool result answers)."""

    def __init__(self, role: str, msg: str | None, fields: dict | None = None) -> None:
        super().__init__(role, msg)
        self.fields = fields or {}


class ToolChatPrompt(ChatPromptFromTemplate):
    """The tokenizer's chat template given the OpenAI messages, tool results included, and the ``tools``."""

    def __init__(self, tokenizer: Any, tools: list[dict] | None) -> None:
        super().__init__(tokenizer)
        self.tools = tools

    def add_message(self, role: str, text: str | None, fields: dict | None = None) -> None:
        mapped = {"user": self.requester, "assistant": self.responder}.get(role, role)
        self.chat_contents.append(ToolContent(mapped, text, fields))

    def messages(self, opts: dict | bool | None = None) -> list[dict]:
        out = [{"role": "system", "content": self.system}] if self.system else []
        for content in self.get_contents(opts):
            if content.message is None:
                continue
            role = {self.requester: "user", self.responder: "assistant"}.get(content.role, content.role)
            out.append({"role": role, "content": content.message, **getattr(content, "fields", {})})
        return out

    def create_prompt(self, opts: dict | bool | None = None) -> str:
        contents = self.get_contents(opts)
        open_turn = bool(contents) and contents[-1].role == self.responder and contents[-1].message is None
        return self.tokenizer.apply_chat_template(self.messages(opts), tools=self.tools, tokenize=False,
                                                  add_generation_prompt=open_turn)

    def copy(self) -> ToolChatPrompt:
        clone = copy.copy(self)
        clone.chat_contents = [ToolContent(c.role, c.message, dict(getattr(c, "fields", {})))
                               for c in self.chat_contents]
        return clone


def tool_prompt(request: proto.ChatCompletionRequest, tokenizer: Any) -> ToolChatPrompt:
    """The prompt of a request with tools, or a tool history; the 400 for a template that cannot render it."""
    if tool_format(getattr(tokenizer, "chat_template", None)) is None:
        raise proto.bad_request("This model's chat template has no tool support (it does not render `tools` in a "
                                "format this server parses: Hermes/Qwen <tool_call> or Llama 3 JSON); send the "
                                "request without tools.", param="tools", code="tools_unsupported")
    tools = [tool.model_dump(exclude_none=True) for tool in request.tools] if request.tools else None
    prompt = ToolChatPrompt(tokenizer, tools)
    system = [m.text for m in request.messages if m.role in ("system", "developer")]
    if system:
        prompt.set_system("\n".join(system))
    for message in request.messages:
        if message.role in ("system", "developer"):
            continue
        fields: dict[str, Any] = {}
        if message.tool_calls:
            fields["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                "name": c.function.name, "arguments": _arguments_object(c.function.arguments)}}
                for c in message.tool_calls]
        if message.tool_call_id is not None:
            fields["tool_call_id"] = message.tool_call_id
        prompt.add_message(message.role, message.text, fields)
    prompt.add_responder_msg(None)
    return prompt


def _arguments_object(arguments: str) -> Any:
    """Templates render a call's arguments as an object (Qwen's ``tojson``); OpenAI sends JSON text."""
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def uses_tools(request: proto.ChatCompletionRequest) -> bool:
    """Whether the request needs the tool-aware prompt: tools offered, or tool calls/results in its history."""
    return bool(request.tools) or any(m.role == "tool" or m.tool_calls for m in request.messages)
