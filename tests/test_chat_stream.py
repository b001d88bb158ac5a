import functools
import inspect
import itertools
import json

import httpx
import pytest
import torch
from fastapi import FastAPI, Request
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatstream.bundled import bundled_model_path
from chatstream.engine.chat_prompt import ChatPromptFromTemplate
from chatstream.engine.chat_prompt_presets import ChatPromptChatML
from chatstream.engine.mock_generator import ROUND_TEXTS, ChatGeneratorMock
from chatstream.engine.token_sampler import TokenSamplerIsok
from chatstream.exceptions import ConfigurationError
from chatstream.serving.chat_stream import ChatStream
from chatstream.serving.client_roles import client_role_free_access
from chatstream.serving.turn import SimpleSessionRequestHandler

SECRET = "0123456789abcdef-test"


@functools.cache
def bundled():
    path = bundled_model_path()
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_constructor_keeps_the_03_names_order_and_defaults():
    parameters = inspect.signature(ChatStream).parameters
    names_03 = ["name", "model", "tokenizer", "num_gpus", "device", "num_of_concurrent_executions", "max_queue_size",
                "too_many_request_as_http_error", "use_mock_response", "mock_params", "chat_prompt_clazz",
                "max_new_tokens", "context_len", "temperature", "top_k", "top_p", "repetition_penalty",
                "repetition_penalty_method", "add_special_tokens", "request_handler", "logger", "locale",
                "client_roles", "token_sampler", "seed", "probe_mode_enabled"]
    assert list(parameters)[: len(names_03)] == names_03
    chat_stream = ChatStream(use_mock_response=True)
    assert chat_stream.name == "node:0"
    assert chat_stream.admission.stats() == {"running": 0, "waiting": 0, "max_running": 2, "max_waiting": 5}
    assert chat_stream.too_many_request_as_http_error is False
    assert isinstance(chat_stream.chat_generator, ChatGeneratorMock)
    assert chat_stream.chat_generator.mock_type == "round"
    assert chat_stream.generation_params.to_dict() == {
        "max_new_tokens": 256, "context_len": 1024, "temperature": 1.0, "top_k": 50, "top_p": 1.0,
        "repetition_penalty": None, "repetition_penalty_method": "multiplicative", "presence_penalty": 0.0,
        "frequency_penalty": 0.0, "add_special_tokens": None, "seed": None, "stop_strings": [], "eos_token_ids": []}
    assert isinstance(chat_stream.request_handler, SimpleSessionRequestHandler)
    assert chat_stream.probe_recorder is None
    assert chat_stream.params["top_k_value"] == 50 and chat_stream.params["temperature"] == 1.0  # 0.3 names


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_queue_size": 0}, "max_queue_size"),
        ({"num_of_concurrent_executions": 0}, "num_of_concurrent_executions"),
        ({"device": "tpu"}, "device"),
        ({"repetition_penalty": 1.2, "repetition_penalty_method": "cubic"}, "repetition_penalty_method"),
        ({"temperature": -1}, "temperature"),
        ({"locale": "fr"}, "locale"),
        ({"mock_params": {"type": "sonnet"}}, "mock_params"),
        ({"chat_prompt_clazz": dict}, "chat_prompt_clazz"),
        ({"max_request_body_bytes": 0}, "max_request_body_bytes"),
        ({"retry_after_sec": -1}, "retry_after_sec"),
        ({"mock_params": "round"}, "mock_params"),
        ({"token_sampler": object()}, "token_sampler"),
        ({"chat_generator": object()}, "chat_generator"),
    ],
)
def test_bad_values_fail_at_construction_with_a_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ChatStream(use_mock_response=True, **kwargs)


async def test_a_model_is_needed_unless_mocked():
    with pytest.raises(ConfigurationError, match="and a tokenizer"):
        ChatStream(model=object())
    chat_stream = ChatStream()  # as in 0.3 (its role tests build one): it fails when started or used
    for start in (chat_stream.start_queue_worker, chat_stream.queue_worker):
        with pytest.raises(ConfigurationError, match=r"without a model.*use_mock_response"):
            await start()
    with pytest.raises(ConfigurationError, match="without a model"):
        await anext(chat_stream.handle_console_input("hi"))
    assert not chat_stream.is_ready


def test_prompt_class_defaults_to_the_tokenizers_template_bound_to_it():
    model, tokenizer = bundled()
    chat_stream = ChatStream(model=model, tokenizer=tokenizer, device="cpu")
    prompt = chat_stream.new_chat_prompt()
    assert isinstance(prompt, ChatPromptFromTemplate) and prompt.tokenizer is tokenizer
    prompt.add_requester_msg("hi")
    assert chat_stream.chat_prompt_from_dict(prompt.to_dict()).create_prompt() == prompt.create_prompt()
    assert isinstance(chat_stream.token_sampler, TokenSamplerIsok)
    assert isinstance(ChatStream(use_mock_response=True).new_chat_prompt(), ChatPromptChatML)


async def make_client(chat_stream, start=True):
    app = FastAPI()
    chat_stream.append_apis(app, {"all": True})
    if start:
        await chat_stream.start_queue_worker()
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_health_is_503_until_started_and_after_stopped():
    chat_stream = ChatStream(use_mock_response=True, session_secret=SECRET)
    async with await make_client(chat_stream, start=False) as client:
        assert (await client.get("/health")).status_code == 503
        refused = await client.post("/chat_stream", json={"user_input": "hi"})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        async with chat_stream.lifespan():
            assert (await client.get("/health")).json() == {
                "status": "ok", "name": "node:0", "replica": chat_stream.replica_name,
                "session_store": {"store": "memory", "ok": True}}
            assert (await client.post("/chat_stream", json={"user_input": "hi"})).status_code == 200
        assert (await client.get("/health")).status_code == 503


async def test_mock_round_streams_through_the_same_path():
    chat_stream = ChatStream(use_mock_response=True, session_secret=SECRET)
    async with await make_client(chat_stream) as client:
        response = await client.post("/chat_stream", json={"user_input": "hi"})
    chunks = response.text.split("<::EOS::>")
    assert chunks[-1] == "" and chunks[-2] == ROUND_TEXTS[0]
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(chunks[:-1]))
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["X-ChatStream-Last-Generated-Message-Id"]


BAD_INPUTS = [
    (b"{not json", 400, "malformed_json"),
    (b"[1, 2]", 400, "body_not_object"),
    (json.dumps({"regenerate": False}).encode(), 400, "missing_user_input"),
    (json.dumps({"user_input": ["a"]}).encode(), 400, "user_input_not_string"),
    (json.dumps({"user_input": "x" * 3000}).encode(), 400, "input_too_long"),
    (json.dumps({"user_input": "x" * 70_000}).encode(), 413, "body_too_large"),
    (json.dumps({"regenerate": True}).encode(), 400, "nothing_to_regenerate"),
]


@pytest.mark.parametrize(("body", "status", "error"), BAD_INPUTS, ids=[b[2] for b in BAD_INPUTS])
async def test_bad_input_gets_a_4xx_json_and_changes_nothing(body, status, error):
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"}, session_secret=SECRET)
    async with await make_client(chat_stream) as client:
        before = (await client.get("/get_prompt")).json()
        response = await client.post("/chat_stream", content=body, headers={"content-type": "application/json"})
        assert response.status_code == status
        assert response.json()["error"] == error and response.json()["detail"]
        assert (await client.get("/get_prompt")).json() == before
    assert chat_stream.admission.stats()["running"] == 0


async def test_real_bundled_model_streams_an_answer_and_keeps_the_history():
    model, tokenizer = bundled()
    chat_stream = ChatStream(model=model, tokenizer=tokenizer, device="cpu", max_new_tokens=12, temperature=0,
                             session_secret=SECRET, client_roles=client_role_free_access)
    async with await make_client(chat_stream) as client:
        first = await client.post("/chat_stream", json={"user_input": "Hello"})
        assert first.status_code == 200
        chunks = first.text.split("<::EOS::>")[:-1]
        assert chunks and all(b.startswith(a) for a, b in itertools.pairwise(chunks))
        history = (await client.get("/get_prompt")).json()["history"]["chat_contents"]
        message_id = first.headers["X-ChatStream-Last-Generated-Message-Id"]
        assert history == [{"role": "user", "message": "Hello"},
                           {"role": "assistant", "message": chunks[-1], "message_id": message_id}]
        again = await client.post("/chat_stream", json={"regenerate": True})
        assert again.text.split("<::EOS::>")[-2] == chunks[-1], "greedy decoding regenerates the same answer"


async def test_probe_mode_records_each_generation(tmp_path):
    model, tokenizer = bundled()
    chat_stream = ChatStream(model=model, tokenizer=tokenizer, device="cpu", max_new_tokens=4, temperature=0,
                             probe_mode_enabled=True, probe_dir=tmp_path, probe_name="serving", session_secret=SECRET)
    assert chat_stream.probe_recorder is not None
    async with await make_client(chat_stream) as client:
        assert (await client.post("/chat_stream", json={"user_input": "Hi"})).status_code == 200
    assert sorted(p.name for p in (tmp_path / "serving").glob("segment-*.json"))
    await chat_stream.stop_queue_worker()


async def test_generation_params_are_per_session_and_validated():
    chat_stream = ChatStream(use_mock_response=True, session_secret=SECRET, client_roles=client_role_free_access)
    async with await make_client(chat_stream) as client:
        ok = await client.post("/set_generation_params", json={"temperature": 0.3, "top_k_value": 5})
        assert ok.json()["generation_params"]["temperature"] == 0.3
        assert (await client.get("/get_generation_params")).json()["generation_params"]["top_k"] == 5
        for bad in ({"temperature": -1}, {"context_len": 9}, {"max_new_tokens": 10_000}, {"top_p": 2}):
            response = await client.post("/set_generation_params", json=bad)
            assert response.status_code == 400 and response.json()["error"] == "bad_generation_params"
        assert (await client.get("/get_generation_params")).json()["generation_params"]["temperature"] == 0.3
        client.cookies.clear()
        fresh = (await client.get("/get_generation_params")).json()["generation_params"]
        assert fresh["temperature"] == 1.0 and fresh["top_k_value"] == 50


async def test_clear_context_load_resource_usage_and_feedback():
    received = []
    chat_stream = ChatStream(use_mock_response=True, session_secret=SECRET, too_many_request_as_http_error=True,
                             client_roles=client_role_free_access)
    app = FastAPI()
    chat_stream.append_apis(app, {"exclude": ["set_feedback"]})

    @app.post("/set_feedback")
    async def feedback(request: Request):
        return await chat_stream.handle_set_feedback_request(request, {"on_feedback_received": received.append})

    await chat_stream.start_queue_worker()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        answer = await client.post("/chat_stream", json={"user_input": "hi"})
        assert (await client.get("/get_prompt")).json()["prompt"]
        assert (await client.post("/clear_context")).json()["success"] is True
        assert (await client.get("/get_prompt")).json()["prompt"] is None
        worker = (await client.get("/get_load")).json()["chatstream_workers"][0]
        assert worker == {"name": "node:0", "replica": chat_stream.replica_name,
                          "processing": 0, "running": 0, "waiting": 0, "max_processing": 2,
                          "max_waiting": 5, "ready": True}
        usage = (await client.get("/get_resource_usage")).json()["memory_usage"][0]
        assert usage["cpu"]["used_memory"] > 0 and usage["cpu"]["total_memory"] >= usage["cpu"]["used_memory"]
        message_id = answer.headers["X-ChatStream-Last-Generated-Message-Id"]
        assert (await client.post("/set_feedback", json={"message_id": message_id, "type": "like"})).status_code == 200
        assert (await client.post("/set_feedback", json={"type": "like"})).status_code == 400
    assert len(received) == 1
    assert received[0].items() >= {"message_id": message_id, "type": "like", "target_message_id": message_id}.items()
    # the context was cleared before the feedback, so the answer it refers to is gone (0.3's keys, None)
    assert received[0]["target_message"] is None and received[0]["prompt"] is None
    assert received[0]["generation_params"]["temperature"] == 1.0


async def test_in_band_too_many_requests_by_default_and_429_when_asked():
    for as_http_error, status in ((False, 200), (True, 429)):
        chat_stream = ChatStream(use_mock_response=True, num_of_concurrent_executions=1, max_queue_size=1,
                                 too_many_request_as_http_error=as_http_error, session_secret=SECRET)
        holders = [chat_stream.admission.try_enter(), chat_stream.admission.try_enter()]  # fill slot and queue
        async with await make_client(chat_stream) as client:
            response = await client.post("/chat_stream", json={"user_input": "hi"})
        assert response.status_code == status and response.json()["error"] == "too_many_requests"
        assert ("retry-after" in response.headers) is as_http_error
        for holder in holders:
            holder.release()
        assert chat_stream.admission.stats()["running"] == 0


async def test_finish_callback_sees_the_live_prompt_like_03():
    seen = []
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"}, session_secret=SECRET)
    app = FastAPI()

    @app.post("/chat_stream")
    async def stream_api(request: Request):
        request_body = await request.body()
        assert json.loads(request_body)["user_input"] == "intercepted"

        def callback_func(req, message):
            session = req.state.session.get_session()
            seen.append((message, session.get("chat_prompt").create_prompt()))

        return await chat_stream.handle_chat_stream_request(request, request_body, callback=callback_func)

    await chat_stream.start_queue_worker()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        await client.post("/chat_stream", json={"user_input": "intercepted"})
    expected = "<|im_start|>user\nintercepted<|im_end|>\n<|im_start|>assistant\nintercepted<|im_end|>\n"
    assert seen == [("success", expected)]


async def test_locale_ja_messages():
    chat_stream = ChatStream(use_mock_response=True, locale="ja", session_secret=SECRET)
    async with await make_client(chat_stream) as client:
        response = await client.post("/chat_stream", json={"user_input": 1})
    assert "文字列" in response.json()["detail"]


async def test_start_and_stop_touch_no_process_wide_signal_handler():
    import signal

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    chat_stream = ChatStream(use_mock_response=True)
    await chat_stream.start_queue_worker()
    await chat_stream.stop_queue_worker()
    assert {sig: signal.getsignal(sig) for sig in before} == before


async def test_console_input_streams_the_03_tuples():
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"})
    out = [item async for item in chat_stream.handle_console_input("one two")]
    assert out == [("one", "one", "begin"), ("one two", " two", "mid"), ("one two", "", "end")]
    assert chat_stream.chat_prompt_for_single_user_on_console.get_responder_last_msg() == "one two"


async def test_stop_strings_and_eos_ids_reach_generation_from_the_constructor_and_the_session():
    model, tokenizer = bundled()
    chat_stream = ChatStream(model=model, tokenizer=tokenizer, device="cpu", max_new_tokens=24, temperature=0,
                             stop_strings=["How"], session_secret=SECRET, client_roles=client_role_free_access)
    assert chat_stream.generation_params.stop_strings == ("How",)
    async with await make_client(chat_stream) as client:
        first = await client.post("/chat_stream", json={"user_input": "Hello"})
        assert first.text.split("<::EOS::>")[-2] == "Hello! "
        bang = tokenizer.convert_tokens_to_ids("!")
        set_params = await client.post("/set_generation_params", json={"stop_strings": [], "eos_token_ids": [bang]})
        assert set_params.status_code == 200, set_params.text
        assert set_params.json()["generation_params"]["eos_token_ids"] == [bang]
        await client.post("/clear_context")
        second = await client.post("/chat_stream", json={"user_input": "Hello"})
        assert second.text.split("<::EOS::>")[-2] == "Hello"


def test_a_device_the_machine_lacks_is_refused_at_construction():
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    model, tokenizer = bundled()
    with pytest.raises(ConfigurationError, match="sees no CUDA GPU"):
        ChatStream(model=model, tokenizer=tokenizer, device="cuda")
