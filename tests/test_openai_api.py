"""The OpenAI-compatible API, driven by the official `openai` client: over httpx's ASGI transport and over uvicorn."""

import asyncio
import functools

import httpx
import openai
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatstream.bundled import bundled_model_path
from chatstream.serving.chat_stream import ChatStream
from pytest_chatstream import lifespan

HELLO = [{"role": "user", "content": "Hello"}]
ANSWER = "Hello! How can I help you today?"  # the bundled model's greedy answer to HELLO


@functools.lru_cache(maxsize=1)
def bundled():
    path = bundled_model_path()
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def live_app(**kwargs):
    model, tokenizer = bundled()
    chat_stream = ChatStream(model=model, tokenizer=tokenizer, device="cpu", temperature=0, **kwargs)
    app = FastAPI(lifespan=chat_stream.lifespan)
    chat_stream.append_apis(app, {"all": True})
    return chat_stream, app


def async_client(app, api_key="none", **kwargs):
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    return openai.AsyncOpenAI(api_key=api_key, base_url="http://testserver/v1", http_client=http, max_retries=0,
                              **kwargs)


@pytest.mark.parametrize("batching", [False, True])
async def test_async_client_non_streaming_answer_usage_and_logprobs(batching):
    chat_stream, app = live_app(batching=batching)
    async with lifespan(app), async_client(app) as client:
        models = await client.models.list()
        assert [m.id for m in models.data] == ["tiny-chat"]
        reply = await client.chat.completions.create(model="tiny-chat", messages=HELLO, logprobs=True, top_logprobs=2)
    choice = reply.choices[0]
    assert choice.message.content == ANSWER and choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    tokens = choice.logprobs.content
    assert "".join(t.token for t in tokens) == ANSWER
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 and t.top_logprobs[0].token == t.token for t in tokens)
    assert reply.usage.completion_tokens == len(tokens) + 1, "the EOS token counts"
    template = bundled()[1].apply_chat_template(HELLO, add_generation_prompt=True, tokenize=False)
    assert reply.usage.prompt_tokens == len(bundled()[1](template, add_special_tokens=False)["input_ids"])
    assert chat_stream.admission.running == 0


async def test_async_client_streams_deltas_usage_and_length():
    _, app = live_app()
    async with lifespan(app), async_client(app) as client:
        stream = await client.chat.completions.create(
            model="tiny-chat", messages=[{"role": "system", "content": "Be kind."}, *HELLO], stream=True,
            stream_options={"include_usage": True}, max_tokens=3)
        chunks = [chunk async for chunk in stream]
        full = await client.chat.completions.create(model="tiny-chat", messages=HELLO, stream=True)
        texts = [c.choices[0].delta.content or "" async for c in full if c.choices]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3
    assert "".join(texts) == ANSWER and len([t for t in texts if t]) > 3, "streamed in pieces"


async def test_stop_strings_sampling_fields_and_content_parts():
    _, app = live_app()
    async with lifespan(app), async_client(app) as client:
        reply = await client.chat.completions.create(
            model="tiny-chat", messages=[{"role": "user", "content": [{"type": "text", "text": "Hel"},
                                                                       {"type": "text", "text": "lo"}]}],
            stop=["How"], temperature=0, top_p=0.9, seed=1, presence_penalty=0.1, frequency_penalty=0.1,
            max_completion_tokens=20)
    assert reply.choices[0].message.content == "Hello! " and reply.choices[0].finish_reason == "stop"


async def test_errors_in_openai_shape_through_the_client_exceptions():
    chat_stream, app = live_app(api_key="secret-key")
    async with lifespan(app):
        async with async_client(app, api_key="wrong") as client:
            with pytest.raises(openai.AuthenticationError) as excinfo:
                await client.chat.completions.create(model="tiny-chat", messages=HELLO)
            assert excinfo.value.code == "invalid_api_key"
        async with async_client(app, api_key="secret-key") as client:
            with pytest.raises(openai.BadRequestError) as excinfo:
                await client.chat.completions.create(model="tiny-chat", messages=HELLO, tools=[
                    {"type": "function", "function": {"name": "f", "parameters": {}}}])
            assert "tools" in excinfo.value.message and excinfo.value.param == "tools"
            with pytest.raises(openai.BadRequestError, match="not streamed"):
                await client.chat.completions.create(model="tiny-chat", messages=HELLO, n=2, stream=True)
            with pytest.raises(openai.BadRequestError, match="may not exceed"):
                await client.chat.completions.create(model="tiny-chat", messages=HELLO, max_tokens=10_000)
            with pytest.raises(openai.NotFoundError, match="does not exist"):
                await client.chat.completions.create(model="gpt-4o", messages=HELLO)
            with pytest.raises(openai.BadRequestError) as excinfo:
                await client.chat.completions.create(model="tiny-chat",
                                                     messages=[{"role": "user", "content": "x" * 5000}])
            assert excinfo.value.code == "context_length_exceeded"
    async with async_client(app, api_key="secret-key") as client:  # lifespan over: not ready
        with pytest.raises(openai.InternalServerError) as excinfo:
            await client.chat.completions.create(model="tiny-chat", messages=HELLO)
        assert excinfo.value.status_code == 503 and excinfo.value.response.headers["retry-after"] == "1"
    assert chat_stream.admission.running == 0


async def test_a_full_queue_is_a_rate_limit_error_with_retry_after_and_the_metrics_see_the_burst():
    # 20 tokens 50 ms apart: the first answer runs 1 s, long enough to see 1 running and 1 waiting on a loaded machine
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "long", "time_per_token_sec": 0.05},
                             num_of_concurrent_executions=1, max_queue_size=1, retry_after_sec=4)
    app = FastAPI(lifespan=chat_stream.lifespan)
    chat_stream.append_apis(app, {"include": ["openai", "metrics"]})
    async with lifespan(app), async_client(app) as client:
        async def ask():
            try:
                stream = await client.chat.completions.create(model="chatstream", messages=HELLO, stream=True,
                                                              max_tokens=20)
                return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            except openai.RateLimitError as error:
                return error

        burst = asyncio.gather(*(ask() for _ in range(4)))
        for _ in range(1000):  # poll (up to 10 s) until admission holds the burst: one running, one waiting
            if (chat_stream.admission.running, chat_stream.admission.waiting) == (1, 1):
                break
            await asyncio.sleep(0.01)
        during = await client._client.get("/metrics")
        results = await burst
        after = await client._client.get("/metrics")
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(refused) == 2 and all(r.response.headers["retry-after"] == "4" for r in refused)
    assert refused[0].code == "rate_limit_exceeded"
    assert sum(isinstance(r, str) and len(r.split()) == 20 for r in results) == 2

    def samples(response):
        assert response.headers["content-type"].startswith("text/plain")
        families = text_string_to_metric_families(response.text)
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}

    now = samples(during)
    assert now[("chatstream_num_requests_running", (("source", "mock"),))] == 1
    assert now[("chatstream_num_requests_waiting", (("source", "mock"),))] == 1
    end = samples(after)
    labels = (("endpoint", "openai"), ("source", "mock"))
    assert end[("chatstream_requests_total", (("endpoint", "openai"), ("outcome", "success"), ("source", "mock")))] == 2
    assert end[("chatstream_request_rejections_total",
                (("endpoint", "openai"), ("reason", "queue_full"), ("source", "mock")))] == 2
    assert end[("chatstream_time_to_first_token_seconds_count", labels)] == 2
    # one observation per delivery after a request's first: 19 per request when each token comes alone, fewer
    # when a loaded machine delivers several at once (each such delivery is one observation of the mean gap)
    assert 2 <= end[("chatstream_inter_token_latency_seconds_count", labels)] <= 2 * 19
    assert end[("chatstream_e2e_request_latency_seconds_count", labels)] == 2
    assert end[("chatstream_generation_tokens_total", (("source", "mock"),))] == 40
    assert end[("chatstream_num_requests_running", (("source", "mock"),))] == 0


async def test_a_client_that_leaves_mid_stream_frees_its_slot_and_is_counted(serve):
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "long", "time_per_token_sec": 0.02},
                             num_of_concurrent_executions=1)
    app = FastAPI(lifespan=chat_stream.lifespan)
    chat_stream.append_apis(app, {"all": True})
    base_url = serve(app)  # a real server: httpx's ASGI transport reads a whole body before returning it
    async with openai.AsyncOpenAI(api_key="x", base_url=base_url + "/v1", max_retries=0) as client:
        stream = await client.chat.completions.create(model="chatstream", messages=HELLO, stream=True)
        async for _ in stream:
            break
        await stream.close()
        for _ in range(200):
            if chat_stream.admission.running == 0:
                break
            await asyncio.sleep(0.01)
        assert chat_stream.admission.running == 0
        text = httpx.get(base_url + "/metrics").text
    assert 'chatstream_client_disconnects_total{endpoint="openai",source="mock",stage="streaming"} 1.0' in text
    assert 'outcome="client_disconnected_while_streaming"' in text


def test_sync_client_over_uvicorn_streaming_and_not(serve):
    _, app = live_app(api_key="k")
    base_url = serve(app)
    with openai.OpenAI(api_key="k", base_url=base_url + "/v1", max_retries=0) as client:
        reply = client.chat.completions.create(model="tiny-chat", messages=HELLO)
        stream = client.chat.completions.create(model="tiny-chat", messages=HELLO, stream=True)
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(api_key="nope", base_url=base_url + "/v1", max_retries=0).models.list()
    assert reply.choices[0].message.content == streamed == ANSWER
    raw = httpx.post(base_url + "/v1/chat/completions", headers={"Authorization": "Bearer k"},
                     json={"model": "tiny-chat", "messages": HELLO, "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.endswith("data: [DONE]\n\n")


async def test_async_client_over_uvicorn(serve):
    _, app = live_app()
    base_url = serve(app)
    async with openai.AsyncOpenAI(api_key="x", base_url=base_url + "/v1", max_retries=0) as client:
        replies = await asyncio.gather(*(client.chat.completions.create(model="tiny-chat", messages=HELLO)
                                         for _ in range(3)))
    assert {r.choices[0].message.content for r in replies} == {ANSWER}
