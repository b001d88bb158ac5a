import json

import pytest

from chatstream.serving.openai_protocol import (
    ChatCompletionRequest,
    OpenAIError,
    chunk,
    completion,
    parse_chat_completion,
    rate_limited,
    sse,
)

BASE = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def body(**changes):
    return json.dumps({**BASE, **changes})


def refused(**changes) -> OpenAIError:
    with pytest.raises(OpenAIError) as excinfo:
        parse_chat_completion(body(**changes))
    assert excinfo.value.status_code == 400
    return excinfo.value


def test_a_full_request_is_read_once_into_what_the_generator_needs():
    request = parse_chat_completion(body(
        messages=[{"role": "system", "content": "be brief"},
                  {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        stream=True, stream_options={"include_usage": True}, max_completion_tokens=7, max_tokens=99,
        temperature=0, top_p=0.5, seed=3, stop="END", presence_penalty=0.5, frequency_penalty=-1,
        logprobs=True, top_logprobs=2, n=1, user="u"))
    assert isinstance(request, ChatCompletionRequest)
    assert request.messages[1].text == "ab" and request.messages[0].text == "be brief"
    assert request.max_new_tokens == 7, "max_completion_tokens wins over the older max_tokens"
    assert request.stop_strings == ("END",) and request.include_usage and request.top_logprobs_count == 2
    plain = parse_chat_completion(body(stop=["x", "y"], max_tokens=4))
    assert plain.stop_strings == ("x", "y") and plain.max_new_tokens == 4 and plain.top_logprobs_count is None
    assert not plain.include_usage and plain.stream is False


@pytest.mark.parametrize("field", ["audio", "modalities", "prediction", "web_search_options"])
def test_unsupported_fields_are_refused_by_name(field):
    error = refused(**{field: {"type": "json_object"}})
    assert field in error.message and error.param == field and error.code == "unsupported_parameter"


@pytest.mark.parametrize(
    ("changes", "param", "fragment"),
    [({"n": 2, "stream": True}, "n", "`n` > 1 is not streamed"),
     ({"n": 9}, "n", "less than or equal to 8"),
     ({"tool_choice": "auto"}, "tool_choice", "needs `tools`"),
     ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {
         "type": "function", "function": {"name": "g"}}}, "tool_choice", "not in `tools`"),
     ({"response_format": {"type": "json_schema"}}, "response_format", "needs `json_schema`"),
     ({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "x"}]}, "messages",
      "needs `tool_call_id`"),
     ({"temperature": 3}, "temperature", "less than or equal to 2"),
     ({"top_logprobs": 30, "logprobs": True}, "top_logprobs", "20"),
     ({"top_logprobs": 2}, "top_logprobs", "needs `logprobs: true`"),
     ({"messages": []}, "messages", "at least 1"),
     ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role", "'system'"),
     ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "messages",
      "last message must be the user's or a tool result"),
     ({"stop": ["a"] * 5}, "stop", "at most 4"),
     ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed with `stream: true`"),
     ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1")],
)
def test_bad_values_get_a_400_naming_the_field(changes, param, fragment):
    error = refused(**changes)
    assert error.param == param and fragment in error.message, error.message
    assert set(error.body()["error"]) == {"message", "type", "param", "code"}


def test_bodies_that_are_not_json_objects():
    for raw in (b"{", b"[1]", b"\xff"):
        with pytest.raises(OpenAIError) as excinfo:
            parse_chat_completion(raw)
        assert excinfo.value.status_code == 400 and "JSON" in excinfo.value.message


def test_429_carries_retry_after_and_openai_shape():
    response = rate_limited("busy", 3)
    assert response.status_code == 429 and response.response().headers["retry-after"] == "3"
    assert json.loads(response.response().body)["error"]["code"] == "rate_limit_exceeded"


def test_reply_shapes():
    line = sse(chunk("chatcmpl-1", 5, "m", {"content": "é"}, None, [{"token": "é"}]))
    assert line.startswith(b"data: {") and line.endswith(b"}\n\n")
    data = json.loads(line[6:])
    assert data["choices"][0] == {"index": 0, "delta": {"content": "é"}, "logprobs": {"content": [{"token": "é"}]},
                                  "finish_reason": None}
    whole = completion("chatcmpl-1", 5, "m", "hi", "length", 3, 2)
    assert whole["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                              "prompt_tokens_details": {"cached_tokens": 0}}
    assert whole["choices"][0]["message"] == {"role": "assistant", "content": "hi"}


def test_content_chunks_are_the_bytes_of_a_whole_chunk():
    from chatstream.serving import openai_protocol as proto

    make = proto.ContentChunks("chatcmpl-x", 1700000000, 'model "q"\\')
    for text in ["", "a", 'quote " backslash \\ newline \n nul \x00 <::EOS::>', "日本語 é", "\ud7ff\U0001f600"]:
        assert make(text) == proto.sse(proto.chunk("chatcmpl-x", 1700000000, 'model "q"\\', {"content": text}))
