"""Issue 10, serving: stalled clients, hostile parameters and bodies, history cost, sessions, headers, dropped
responses. Each test goes through the real app (uvicorn on loopback, or httpx's ASGI transport)."""

import asyncio
import gc
import json
import socket
import time

import httpx
import pytest
from fastapi import FastAPI

from chatstream.serving.chat_stream import ChatStream
from chatstream.serving.client_roles import client_role_free_access

SECRET = "0123456789abcdef-test"
EOS = "<::EOS::>"


def app_for(chat_stream: ChatStream) -> FastAPI:
    if not chat_stream.client_roles_given:  # the tests call every API
        chat_stream.set_client_roles(client_role_free_access)
    app = FastAPI(lifespan=chat_stream.lifespan)
    chat_stream.append_apis(app, {"all": True})
    return app


async def asgi_client(chat_stream: ChatStream) -> httpx.AsyncClient:
    await chat_stream.start_queue_worker()
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app_for(chat_stream)), base_url="http://t")


def stalled_request(base_url: str, body: dict, cookie: str | None = None) -> socket.socket:
    """Send a chat request from a socket with a tiny receive buffer that never reads its answer."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect((host, int(port)))
    payload = json.dumps(body).encode()
    head = (f"POST /chat_stream HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n" + (f"Cookie: {cookie}\r\n" if cookie else "") + "\r\n")
    sock.sendall(head.encode() + payload)
    return sock


# -- 1. a client that stops reading ------------------------------------------------------------------------


async def test_a_stalled_reader_times_out_and_frees_its_slot_and_session_lock(serve):
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"}, session_secret=SECRET,
                             num_of_concurrent_executions=2, send_timeout_sec=1.0,
                             max_new_tokens=4000, context_len=40_000)
    base_url = serve(app_for(chat_stream))
    long_input = " ".join(["word"] * 3000)  # echoed word by word, each chunk the whole answer: ~100 MB in all
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        first = await client.post("/chat_stream", json={"user_input": "hello"})
        cookie = f"chatstream_session={first.cookies['chatstream_session']}"
        sockets = [stalled_request(base_url, {"user_input": long_input}, cookie),
                   stalled_request(base_url, {"user_input": long_input})]
        try:
            deadline = time.monotonic() + 20  # a loaded machine takes a while to read two 3000-word requests
            while chat_stream.admission.stats()["running"] < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert chat_stream.admission.stats()["running"] == 2  # both stalled streams hold a slot
            started = time.monotonic()
            while chat_stream.admission.stats()["running"] and time.monotonic() - started < 15:
                await asyncio.sleep(0.05)
            freed_after = time.monotonic() - started
            assert chat_stream.admission.stats()["running"] == 0, "a stalled send kept its slot"
            assert freed_after < 8, freed_after
            # the stalled session's lock was released: the same session chats again at once
            again = await asyncio.wait_for(client.post("/chat_stream", json={"user_input": "again"}), 10)
            assert again.status_code == 200 and again.text.endswith("again" + EOS)
        finally:
            for sock in sockets:
                sock.close()


def test_send_timeout_is_checked():
    with pytest.raises(ValueError, match="send_timeout_sec"):
        ChatStream(use_mock_response=True, send_timeout_sec=0)


# -- 2. parameters that pass validation must generate -------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chatstream.bundled import bundled_model_path

    path = bundled_model_path()
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("change", [
    {"seed": 2**64}, {"seed": -(2**63) - 1}, {"seed": 10**30}, {"temperature": 1e-300}, {"temperature": 1e-5},
    {"repetition_penalty": 1e-300}, {"repetition_penalty": 1e300},
    {"repetition_penalty": 1e300, "repetition_penalty_method": "subtractive"},
])
async def test_parameters_that_cannot_generate_get_a_400_and_change_nothing(tiny, change):
    model, tokenizer = tiny
    chat_stream = ChatStream(model=model, tokenizer=tokenizer, device="cpu", session_secret=SECRET, max_new_tokens=4)
    async with await asgi_client(chat_stream) as client:
        ok = await client.post("/set_generation_params", json={"seed": 7})
        assert ok.status_code == 200
        bad = await client.post("/set_generation_params", json=change)
        assert bad.status_code == 400, bad.text
        assert (await client.get("/get_generation_params")).json()["generation_params"]["seed"] == 7
        chat = await client.post("/chat_stream", json={"user_input": "hello"})
        assert chat.status_code == 200 and chat.text.endswith(EOS)


@pytest.mark.parametrize("change", [
    {"seed": 2**64 - 1}, {"seed": -(2**63)}, {"temperature": 1e-4}, {"temperature": 1e6},
    {"repetition_penalty": 1e-4}, {"repetition_penalty": 1e4},
    {"repetition_penalty": 1e4, "repetition_penalty_method": "subtractive"},
    {"temperature": 1e-4, "repetition_penalty": 1e-4, "top_p": 1e-9, "top_k": 1},
])
async def test_every_accepted_extreme_generates(tiny, change):
    model, tokenizer = tiny
    chat_stream = ChatStream(model=model, tokenizer=tokenizer, device="cpu", session_secret=SECRET, max_new_tokens=6)
    async with await asgi_client(chat_stream) as client:
        assert (await client.post("/set_generation_params", json=change)).status_code == 200
        for turn, text in enumerate(("hello", "again"), start=1):
            chat = await client.post("/chat_stream", json={"user_input": text})
            # an answer may be empty (EOS first, e.g. when a tiny penalty favours seen tokens), never broken: even an
            # empty answer is one chunk ending with the end-of-answer marker, so an empty body is a broken stream
            assert chat.status_code == 200 and chat.text.endswith(EOS), chat.text
            history = (await client.get("/get_prompt")).json()["history"]["chat_contents"]
            assert len(history) == 2 * turn  # the turn completed (a failed one leaves the history as it was)


def test_fp16_logits_at_the_smallest_temperature_and_penalty_sample_a_real_token():
    import torch

    from chatstream.engine.sampling import SamplingParams
    from chatstream.engine.token_sampler import TokenSamplerIsok

    logits = torch.tensor([[60000.0, -60000.0, 3.0, 0.0]], dtype=torch.float16)
    params = SamplingParams(temperature=1e-4, top_k=None, repetition_penalty=1e-4)
    history = torch.tensor([[1, 2]])
    assert TokenSamplerIsok(seed=1).sample(logits, history, params) in (0, 1, 2, 3)


# -- 3. deeply nested JSON, lone surrogates ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/chat_stream", "/set_generation_params", "/set_feedback"])
async def test_deeply_nested_json_is_a_400(path):
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"}, session_secret=SECRET)
    async with await asgi_client(chat_stream) as client:
        body = "[" * 20_000 + "]" * 20_000
        response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "malformed_json"


@pytest.mark.parametrize("path", ["/chat_stream", "/set_generation_params", "/set_feedback"])
async def test_a_lone_surrogate_is_a_400_and_changes_nothing(path):
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"}, session_secret=SECRET)
    async with await asgi_client(chat_stream) as client:
        assert (await client.post("/chat_stream", json={"user_input": "hello"})).status_code == 200
        before = (await client.get("/get_prompt")).json()
        body = {"/chat_stream": '{"user_input": "a\\ud800b"}', "/set_generation_params": '{"seed": 1, "x\\udc00": 1}',
                "/set_feedback": '{"message_id": "\\ud800"}'}[path]
        response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text
        after = await client.get("/get_prompt")
        assert after.status_code == 200 and after.json() == before
        assert (await client.post("/chat_stream", json={"user_input": "again"})).text.endswith("again" + EOS)


# -- 8. a response built and dropped without being sent -----------------------------------------------------


def chat_request(body: bytes, cookie: str | None = None):
    from starlette.requests import Request

    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)

    headers = [(b"content-type", b"application/json")] + ([(b"cookie", cookie.encode())] if cookie else [])
    scope = {"type": "http", "method": "POST", "path": "/chat_stream", "headers": headers, "query_string": b"",
             "app": None}
    return Request(scope, receive)


async def test_a_dropped_response_releases_its_slot_and_session_lock():
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"}, session_secret=SECRET,
                             num_of_concurrent_executions=1)
    await chat_stream.start_queue_worker()
    request = chat_request(b'{"user_input": "hello"}')
    response = await chat_stream.handle_chat_stream_request(request)
    assert response.status_code == 200
    session_id = chat_stream.sessions.current(request).session_id
    assert chat_stream.admission.stats()["running"] == 1
    assert chat_stream.sessions.lock(session_id).locked()
    del response, request
    gc.collect()
    for _ in range(1000):  # poll (up to 10 s): a loaded machine may take a while to run the finalizer's release
        if chat_stream.admission.stats()["running"] == 0:
            break
        await asyncio.sleep(0.01)
    assert chat_stream.admission.stats()["running"] == 0
    assert not chat_stream.sessions.lock(session_id).locked()


# -- 7. headers and surface ------------------------------------------------------------------------------


def test_the_serve_app_has_no_api_docs_unless_asked():
    from fastapi.testclient import TestClient

    from chatstream.serving.app import create_app

    chat_stream = ChatStream(use_mock_response=True, session_secret=SECRET)
    with TestClient(create_app(chat_stream)) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 404, path
    with TestClient(create_app(chat_stream, api_docs=True)) as client:
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/docs").status_code == 200


def test_the_cli_flag_turns_api_docs_on():
    from chatstream.serving.cli import build_parser

    assert build_parser().parse_args(["serve"]).api_docs is False
    assert build_parser().parse_args(["serve", "--api-docs"]).api_docs is True


async def test_json_and_streamed_responses_say_nosniff():
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"}, session_secret=SECRET)
    async with await asgi_client(chat_stream) as client:
        responses = [await client.post("/chat_stream", json={"user_input": "hi"}),
                     await client.get("/get_load"), await client.get("/health"),
                     await client.post("/chat_stream", json={"user_input": 1}),
                     await client.post("/set_generation_params", json={"temperature": -1})]
        for response in responses:
            assert response.headers.get("x-content-type-options") == "nosniff", (response.request.url, response.text)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          None])
@pytest.mark.parametrize("path", ["/chat_stream", "/set_generation_params", "/set_feedback", "/clear_context"])
async def test_chat_posts_need_a_json_content_type(path, content_type):
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"}, session_secret=SECRET)
    async with await asgi_client(chat_stream) as client:
        assert (await client.post("/chat_stream", json={"user_input": "hello"})).status_code == 200
        before = [(await client.get(p)).json() for p in ("/get_prompt", "/get_generation_params")]
        body = json.dumps({"/chat_stream": {"user_input": "x"}, "/set_generation_params": {"temperature": 0.5},
                           "/set_feedback": {"message_id": "m"}, "/clear_context": {}}[path]).encode()
        headers = {"Content-Type": content_type} if content_type else {}
        response = await client.post(path, content=body, headers=headers)
        assert response.status_code == 415, response.text
        assert response.json()["error"] == "unsupported_media_type"
        assert [(await client.get(p)).json() for p in ("/get_prompt", "/get_generation_params")] == before
        # a body-less POST (the web page's clear_context) and JSON with a charset are fine
        if path == "/clear_context":
            assert (await client.post(path)).status_code == 200
        ok = await client.post(path, content=body, headers={"Content-Type": "application/json; charset=utf-8"})
        assert ok.status_code == 200


async def test_a_literal_finish_token_in_an_answer_keeps_the_framing():
    from chatstream.serving._http import unescape_frame

    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"}, session_secret=SECRET)
    tricky = "a <::EOS::> b <::ESC::> c <::"
    async with await asgi_client(chat_stream) as client:
        text = (await client.post("/chat_stream", json={"user_input": tricky})).text
        frames = text.split(EOS)
        assert frames[-1] == "" and all(frames[:-1])
        assert unescape_frame(frames[-2]) == tricky
        assert (await client.get("/get_prompt")).json()["history"]["chat_contents"][-1]["message"] == tricky
        normal = (await client.post("/chat_stream", json={"user_input": "plain words <: here"})).text
        assert normal.endswith("plain words <: here" + EOS)  # normal answers keep the 0.3 format as is


# -- 5. session fixation, 6. cookieless calls evicting sessions --------------------------------------------

ADMIN_PHRASE = "open sesame 42"
ROLES = {
    "user": {"apis": {"allow": ["chat_stream", "clear_context", "set_feedback", "set_generation_params",
                                "get_prompt", "get_generation_params"], "auth_method": "nothing", "use_session": True}},
    "admin": {"apis": {"allow": "all", "auth_method": "ui_pass_phrase", "ui_pass_phrase": ADMIN_PHRASE,
                       "use_session": True}},
}


async def test_entering_a_pass_phrase_issues_a_new_session_id():
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"}, client_roles=ROLES,
                             session_secret=SECRET)
    async with await asgi_client(chat_stream) as victim:
        await victim.post("/chat_stream", json={"user_input": "hello"})
        planted = victim.cookies["chatstream_session"]  # what an attacker would have planted
        promoted = await victim.post("/chat_stream", json={"user_input": ADMIN_PHRASE})
        assert promoted.status_code == 200
        assert victim.cookies["chatstream_session"] != planted
        assert (await victim.get("/get_load")).status_code == 200  # the victim is admin under the new id
        history = (await victim.get("/get_prompt")).json()["history"]["chat_contents"]
        assert [c["message"] for c in history] == ["hello", "hello"]  # the history moved with it
        attacker = httpx.AsyncClient(transport=victim._transport, base_url="http://t",
                                     cookies={"chatstream_session": planted})
        async with attacker:
            assert (await attacker.get("/get_load")).status_code == 403
            assert (await attacker.get("/get_prompt")).json()["prompt"] is None


async def test_cookieless_calls_do_not_evict_established_sessions():
    from chatstream.serving.sessions import MemorySessionStore

    store = MemorySessionStore(max_sessions=5)
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"}, client_roles=ROLES,
                             session_secret=SECRET, session_store=store)
    await chat_stream.start_queue_worker()
    transport = httpx.ASGITransport(app=app_for(chat_stream))
    users = [httpx.AsyncClient(transport=transport, base_url="http://t") for _ in range(5)]
    for i, user in enumerate(users):
        await user.post("/chat_stream", json={"user_input": f"user {i}"})
        await user.post("/set_generation_params", json={"temperature": 0.5})  # comes back with its cookie
    for _ in range(50):  # anonymous calls, each without a cookie
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as anonymous:
            await anonymous.post("/set_generation_params", json={"temperature": 0.7})
            await anonymous.post("/clear_context")
    for i, user in enumerate(users):
        history = (await user.get("/get_prompt")).json()["history"]["chat_contents"]
        assert history[0]["message"] == f"user {i}"
        assert (await user.get("/get_generation_params")).json()["generation_params"]["temperature"] == 0.5
        await user.aclose()


# -- 4. tokenise once, bounded history, trimming that follows what is kept -----------------------------------


class CountingTokenizer:
    """Wraps a tokenizer and counts the text it is asked to tokenise."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls, self.chars = tokenizer, 0, 0

    def __call__(self, text, **kwargs):
        self.calls += 1
        self.chars += len(text)
        return self.tokenizer(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def long_prompt(tokenizer, turns):
    from chatstream.engine.chat_prompt import ChatPromptFromTemplate

    prompt = ChatPromptFromTemplate(tokenizer)
    for i in range(turns):
        prompt.add_requester_msg(f"question number {i} about the weather today")
        prompt.add_responder_msg(f"answer number {i}: it is sunny and warm")
    prompt.add_requester_msg("and tomorrow?")
    prompt.add_responder_msg(None)
    return prompt


async def test_a_request_is_tokenised_once_for_admission_and_generation(tiny):
    model, tokenizer = tiny
    counting = CountingTokenizer(tokenizer)
    chat_stream = ChatStream(model=model, tokenizer=counting, device="cpu", session_secret=SECRET, max_new_tokens=3)
    async with await asgi_client(chat_stream) as client:
        counting.calls = 0
        assert (await client.post("/chat_stream", json={"user_input": "hello"})).status_code == 200
        assert counting.calls == 1


def test_trimming_tokenises_about_what_is_kept_not_the_whole_history(tiny):
    from chatstream.engine.generation import GenerationParams, build_input_ids

    _, tokenizer = tiny
    params = GenerationParams(max_new_tokens=32, context_len=256)
    kept_chars = {}
    for turns in (200, 800):
        counting = CountingTokenizer(tokenizer)
        prompt = long_prompt(counting, turns)
        whole = len(prompt.create_prompt())
        ids, room = build_input_ids(prompt, counting, params)
        assert len(ids) + room <= 256 and room == 32
        kept_chars[turns] = counting.chars - whole  # what trimming cost, beyond the one whole tokenisation
        assert counting.calls <= 2 + 2 * 10  # galloping and bisecting: logarithmic in the kept turns
    assert kept_chars[800] <= kept_chars[200] * 1.2, kept_chars  # independent of the history's length


async def test_the_stored_history_is_bounded():
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"}, session_secret=SECRET,
                             max_history_turns=3)
    async with await asgi_client(chat_stream) as client:
        for i in range(6):
            await client.post("/chat_stream", json={"user_input": f"turn {i}"})
        history = (await client.get("/get_prompt")).json()["history"]["chat_contents"]
        assert [c["message"] for c in history] == ["turn 3", "turn 3", "turn 4", "turn 4", "turn 5", "turn 5"]
