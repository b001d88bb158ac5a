"""Tool-call formats read from chat templates, parsed from whole answers and from streamed text."""

import json

from chatstream.serving.openai_tools import ToolCallStream, ToolFormat, parse_tool_calls, tool_format

CALL = '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>'


def test_the_format_comes_from_the_template():
    assert tool_format("{% for t in tools %}<tool_call>{% endfor %}") is ToolFormat.HERMES
    assert tool_format("{% if tools %}<|python_tag|>{% endif %}") is ToolFormat.LLAMA3_JSON
    assert tool_format("<|im_start|>{{ m.content }}") is None and tool_format(None) is None


def test_whole_answers():
    content, calls = parse_tool_calls("Sure. " + CALL + CALL, ToolFormat.HERMES)
    assert content == "Sure." and [c["function"]["name"] for c in calls] == ["f", "f"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"x": 1} and calls[0]["id"] != calls[1]["id"]
    assert parse_tool_calls("<tool_call>{bad</tool_call>", ToolFormat.HERMES) == ("<tool_call>{bad</tool_call>", [])
    assert parse_tool_calls("hello", ToolFormat.HERMES) == ("hello", [])
    content, calls = parse_tool_calls('{"name": "g", "parameters": {"y": "z"}}', ToolFormat.LLAMA3_JSON)
    assert content is None and calls[0]["function"] == {"name": "g", "arguments": '{"y": "z"}'}
    assert parse_tool_calls('{"a": 1}', ToolFormat.LLAMA3_JSON) == ('{"a": 1}', [])


def test_streamed_text_holds_back_a_marker_split_across_deltas():
    stream = ToolCallStream(ToolFormat.HERMES)
    deltas = []
    text = "Hi <" + CALL[1:] + " bye"
    for i in range(0, len(text), 3):
        deltas += stream.feed(text[i:i + 3])
    deltas += stream.finish()
    content = "".join(d.get("content", "") for d in deltas)
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert content == "Hi  bye" and calls[0]["function"]["name"] == "f" and calls[0]["index"] == 0
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"x": 1}
    assert "id" in calls[0] and all("id" not in c for c in calls[1:])
