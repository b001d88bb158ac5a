"""Structured outputs, tool calls, n and logit_bias through the official `openai` client, on the bundled model,
and a structured conversation recorded in probe mode replaying byte-identically."""

import json
import shutil

import httpx
import jsonschema
import openai
import pytest
from fastapi import FastAPI
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatstream.bundled import bundled_model_path
from chatstream.cassettes.recording import ProbeRecorder
from chatstream.cassettes.replay import MockTransformer
from chatstream.engine.chat_prompt import ChatPromptFromTemplate
from chatstream.engine.constraints import Constraint
from chatstream.engine.generation import ChatGenerator, GenerationParams
from chatstream.exceptions import CassetteMiss, ConstraintError
from chatstream.serving.chat_stream import ChatStream
from pytest_chatstream import lifespan

ASK = [{"role": "user", "content": "How is the weather in Tokyo?"}]
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 16},
        "forecast": {"type": "array", "maxItems": 3, "items": {
            "type": "object",
            "properties": {"day": {"enum": ["mon", "tue", "wed"]}, "celsius": {"type": "integer"}},
            "required": ["day", "celsius"], "additionalProperties": False}},
        "sky": {"enum": ["sunny", "rainy", "cloudy"]},
    },
    "required": ["city", "forecast", "sky"],
    "additionalProperties": False,
}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                    "unit": {"enum": ["c", "f"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 8}},
                                       "required": ["zone"], "additionalProperties": False}}}
# A Hermes-style ChatML template that renders `tools` (the bundled model's own template does not).
HERMES_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0].role == 'system' %}"
    "{{- messages[0].content + '\\n\\n' }}{%- endif %}{{- 'Tools: <tools>' }}{%- for t in tools %}"
    "{{- t | tojson }}{%- endfor %}{{- '</tools>\\nCall one as <tool_call>{\"name\": ..., \"arguments\": ...}"
    "</tool_call><|im_end|>\\n' }}{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for m in messages %}{%- if m.role == 'system' %}{%- elif m.role == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + m.content + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- elif m.role == 'assistant' and m.tool_calls %}{{- '<|im_start|>assistant\\n' + (m.content or '') }}"
    "{%- for c in m.tool_calls %}{{- '<tool_call>\\n' }}"
    "{{- {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}{{- '\\n</tool_call>' }}"
    "{%- endfor %}{{- '<|im_end|>\\n' }}{%- else %}"
    "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def load(path):
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def bundled():
    return load(bundled_model_path())


@pytest.fixture(scope="module")
def hermes_model(tmp_path_factory):
    """A copy of the bundled model whose chat template renders tools the Hermes/Qwen way."""
    path = tmp_path_factory.mktemp("hermes") / "tiny-chat"
    shutil.copytree(bundled_model_path(), path)
    config = json.loads((path / "tokenizer_config.json").read_text())
    config["chat_template"] = HERMES_TEMPLATE
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return load(path)


def app_of(model_and_tokenizer, **kwargs):
    model, tokenizer = model_and_tokenizer
    settings = {"temperature": 1.0, "seed": 7, "max_new_tokens": 120, **kwargs}
    chat_stream = ChatStream(model=model, tokenizer=tokenizer, device="cpu", **settings)
    app = FastAPI(lifespan=chat_stream.lifespan)
    chat_stream.append_apis(app, {"all": True})
    return chat_stream, app


def client_of(app):
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    return openai.AsyncOpenAI(api_key="none", base_url="http://testserver/v1", http_client=http, max_retries=0)


def schema_format(schema=SCHEMA):
    return {"type": "json_schema", "json_schema": {"name": "weather", "schema": schema, "strict": True}}


@pytest.mark.parametrize("batching", [False, True])
async def test_json_schema_answers_validate_streamed_and_not_where_the_model_alone_breaks_it(bundled, batching):
    chat_stream, app = app_of(bundled, batching=batching)
    async with lifespan(app), client_of(app) as client:
        answers, free = [], []
        for seed in range(4):
            reply = await client.chat.completions.create(model="tiny-chat", messages=ASK, seed=seed,
                                                         response_format=schema_format())
            assert reply.choices[0].finish_reason == "stop"
            answers.append(reply.choices[0].message.content)
            stream = await client.chat.completions.create(model="tiny-chat", messages=ASK, seed=seed, stream=True,
                                                          response_format=schema_format())
            pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            assert "".join(pieces) == answers[-1] and len([p for p in pieces if p]) > 3
            plain = await client.chat.completions.create(model="tiny-chat", messages=ASK, seed=seed)
            free.append(plain.choices[0].message.content)
        cut = await client.chat.completions.create(model="tiny-chat", messages=ASK, max_tokens=5,
                                                   response_format=schema_format())
        anything = await client.chat.completions.create(model="tiny-chat", messages=ASK,
                                                        response_format={"type": "json_object"})
    for answer in answers:
        jsonschema.validate(json.loads(answer), SCHEMA)
    assert len(set(answers)) > 1, "sampled: the answers differ, all valid"
    for text in free:  # the same requests unconstrained: the tiny model never writes this JSON
        with pytest.raises(ValueError):
            jsonschema.validate(json.loads(text), SCHEMA)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 5
    text = anything.choices[0].message.content  # free keys: the tiny model may write one until the limit
    assert text.startswith("{") and (anything.choices[0].finish_reason == "length" or json.loads(text))
    assert chat_stream.admission.running == 0


async def test_a_schema_the_library_cannot_compile_is_a_400_naming_what(bundled):
    chat_stream, app = app_of(bundled)
    bad = {"type": "object", "properties": {"when": {"type": "string", "format": "stardate"}}}
    async with lifespan(app), client_of(app) as client:
        with pytest.raises(openai.BadRequestError) as excinfo:
            await client.chat.completions.create(model="tiny-chat", messages=ASK, response_format=schema_format(bad))
        assert "stardate" in excinfo.value.message and excinfo.value.code == "unsupported_schema"
        with pytest.raises(openai.BadRequestError, match="no tool support"):
            await client.chat.completions.create(model="tiny-chat", messages=ASK, tools=[WEATHER_TOOL])
    assert chat_stream.admission.running == 0


def _arguments_valid(call, tool):
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == tool["function"]["name"]
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


@pytest.mark.parametrize("batching", [False, True])
async def test_required_and_named_tool_calls_parse_and_stream(hermes_model, batching):
    _, app = app_of(hermes_model, batching=batching)
    tools = [WEATHER_TOOL, TIME_TOOL]
    async with lifespan(app), client_of(app) as client:
        for seed in range(3):
            reply = await client.chat.completions.create(model="tiny-chat", messages=ASK, tools=tools, seed=seed,
                                                         tool_choice="required")
            choice = reply.choices[0]
            assert choice.finish_reason == "tool_calls" and choice.message.content is None
            (call,) = choice.message.tool_calls
            _arguments_valid(call, WEATHER_TOOL if call.function.name == "get_weather" else TIME_TOOL)
        named = {"type": "function", "function": {"name": "get_time"}}
        reply = await client.chat.completions.create(model="tiny-chat", messages=ASK, tools=tools, seed=1,
                                                     tool_choice=named)
        _arguments_valid(reply.choices[0].message.tool_calls[0], TIME_TOOL)
        stream = await client.chat.completions.create(model="tiny-chat", messages=ASK, tools=tools, seed=1,
                                                      tool_choice=named, stream=True)
        chunks = [c async for c in stream]
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].index == 0 and deltas[0].id.startswith("call_") and deltas[0].function.name == "get_time"
    assert len(deltas) > 2, "the arguments come in fragments"
    assert all(d.index == 0 for d in deltas) and all(d.id is None for d in deltas[1:])
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(arguments) == json.loads(reply.choices[0].message.tool_calls[0].function.arguments)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert not any(c.choices[0].delta.content for c in chunks[1:] if c.choices), "no call text leaks as content"


async def test_a_tool_history_is_rendered_and_auto_and_none_answer(hermes_model):
    _, app = app_of(hermes_model, temperature=0)
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                          "arguments": '{"city": "Tokyo", "unit": "c"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "sunny"}'}]
    async with lifespan(app), client_of(app) as client:
        auto = await client.chat.completions.create(model="tiny-chat", messages=history, tools=[WEATHER_TOOL])
        none = await client.chat.completions.create(model="tiny-chat", messages=history, tools=[WEATHER_TOOL],
                                                    tool_choice="none")
    # the tiny model answers in text; both modes generate from the same rendered prompt (greedy)
    assert auto.choices[0].message.content == none.choices[0].message.content
    assert auto.choices[0].finish_reason == "stop" and not auto.choices[0].message.tool_calls
    tokenizer = hermes_model[1]
    rendered = tokenizer.apply_chat_template(
        [*ASK, {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": {"city": "Tokyo", "unit": "c"}}}]},
         {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "sunny"}'}],
        tools=[WEATHER_TOOL], tokenize=False, add_generation_prompt=True)
    assert auto.usage.prompt_tokens == len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    assert "<tool_response>" in rendered and '"city": "Tokyo"' in rendered


async def test_n_choices_and_logit_bias_banning_a_token(bundled):
    _, app = app_of(bundled)
    async with lifespan(app), client_of(app) as client:
        three = await client.chat.completions.create(model="tiny-chat", messages=ASK, n=3, seed=5, max_tokens=12)
        again = await client.chat.completions.create(model="tiny-chat", messages=ASK, n=3, seed=5, max_tokens=12)
        greedy = await client.chat.completions.create(model="tiny-chat", messages=ASK, temperature=0)
        first = bundled[1](greedy.choices[0].message.content, add_special_tokens=False)["input_ids"]
        banned = await client.chat.completions.create(model="tiny-chat", messages=ASK, temperature=0,
                                                      logit_bias={str(first[0]): -100})
        with pytest.raises(openai.BadRequestError, match="not a token id"):
            await client.chat.completions.create(model="tiny-chat", messages=ASK, logit_bias={"99999": 5})
    texts = [c.message.content for c in three.choices]
    assert [c.index for c in three.choices] == [0, 1, 2] and len(set(texts)) == 3
    assert texts == [c.message.content for c in again.choices], "a seeded request gives the same n answers"
    assert three.usage.completion_tokens == sum(
        len(bundled[1](t, add_special_tokens=False)["input_ids"]) for t in texts) or three.usage.completion_tokens > 12
    ids = bundled[1](banned.choices[0].message.content, add_special_tokens=False)["input_ids"]
    assert first[0] not in ids and banned.choices[0].message.content != greedy.choices[0].message.content


@pytest.mark.parametrize("batching", [False, True], ids=["unbatched", "batched"])
async def test_n_choices_share_the_prompts_prefill(bundled, batching):
    """Choice 0 prefills the prompt; the others reuse it from the prefix cache and prefill one token each."""
    chat_stream, app = app_of(bundled, batching=batching)
    cache = chat_stream.chat_generator.prefix_cache
    async with lifespan(app), client_of(app) as client:
        three = await client.chat.completions.create(model="tiny-chat", messages=ASK, n=3, seed=5, max_tokens=12)
    prompt = three.usage.prompt_tokens
    stats = cache.stats
    assert (stats.hits, stats.misses) == (2, 1)
    assert (stats.computed_tokens, stats.reused_tokens) == (prompt + 2, 2 * (prompt - 1))
    assert len({c.message.content for c in three.choices}) == 3


def test_a_constrained_generation_records_its_constraint_and_replays_byte_identically(bundled, tmp_path):
    model, tokenizer = bundled
    params = GenerationParams(max_new_tokens=200, temperature=1.0, seed=3,
                              constraint=Constraint.json_schema(SCHEMA), logit_bias={"40": -5})

    def ask(t):
        prompt = ChatPromptFromTemplate(t)
        prompt.add_requester_msg("How is the weather in Tokyo?")
        prompt.add_responder_msg(None)
        return prompt

    with ProbeRecorder(tmp_path / "structured") as recorder:
        m, t, s = recorder.wrap(model, tokenizer)
        live = "".join(ChatGenerator(m, t, "cpu", params, s).stream(ask(t)))
    jsonschema.validate(json.loads(live), SCHEMA)
    segments = [json.loads(f.read_text()) for f in (tmp_path / "structured").glob("segment-*.json")]
    keys = {p.get("constraint") for seg in segments for p in seg.get("params", [])}
    assert keys == {params.constraint.key}, "each sample records the stream's constraint"
    assert {seg["format_version"] for seg in segments} == {2}, "segments with constraints are format version 2"
    manifest = json.loads((tmp_path / "structured" / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    mock = MockTransformer.from_path(tmp_path / "structured")
    replay = ChatGenerator(mock.get_model(), mock.get_tokenizer(), "cpu", params, mock.get_token_sampler())
    assert "".join(replay.stream(ask(mock.get_tokenizer()))) == live
    other = params.replace(constraint=Constraint.json_object())  # another constraint: not what was recorded
    with pytest.raises((CassetteMiss, ConstraintError), match="never recorded"):
        "".join(ChatGenerator(mock.get_model(), mock.get_tokenizer(), "cpu", other,
                              mock.get_token_sampler()).stream(ask(mock.get_tokenizer())))
