"""The ChatStream 0.3 surface kept on this ChatStream, item by item (issue 9)."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
import torch
from chatstream.chat_prompt_presets import ChatPromptTogetherRedPajamaINCITEChat
from fastapi import FastAPI, Request
from fastsession import FastSessionMiddleware, MemoryStore
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatstream import ChatGenerator, ChatStream, GenerationParams, client_role_free_access
from chatstream.bundled import bundled_model_path

SECRET = "compat03-test-secret-0123456789"


class InstructedRedPajama(ChatPromptTogetherRedPajamaINCITEChat):
    """A 0.3 how-to prompt: roles set in __init__, example turns in build_initial_prompt."""

    def build_initial_prompt(self, chat_prompt):
        chat_prompt.add_requester_msg("Do you know about the Titanic movie?")
        chat_prompt.add_responder_msg("Yes, I am familiar with it.")


def test_build_initial_prompt_runs_after_the_subclass_set_its_roles():
    chat_stream = ChatStream(use_mock_response=True, chat_prompt_clazz=InstructedRedPajama, session_secret=SECRET)
    prompt = chat_stream.new_chat_prompt()
    assert [c.get_role() for c in prompt.get_contents()] == ["<human>", "<bot>"]
    assert prompt.create_prompt() == ("<human>: Do you know about the Titanic movie?\n"
                                      "<bot>: Yes, I am familiar with it.\n")


def test_create_prompt_takes_the_03_dict_and_a_bool_with_the_same_meaning():
    prompt = ChatPromptTogetherRedPajamaINCITEChat()
    prompt.add_requester_msg("Hi")
    prompt.add_responder_msg("Hello")
    assert prompt.create_prompt({"omit_last_message": True}) == prompt.create_prompt(True) == "<human>: Hi\n<bot>:"
    full = "<human>: Hi\n<bot>: Hello\n"
    assert prompt.create_prompt({"omit_last_message": False}) == prompt.create_prompt(False) == full
    assert prompt.get_skip_len(omit_last_message=True) == len("<human>: Hi\n<bot>:")
    with pytest.raises(TypeError, match="omit_last_message"):
        prompt.create_prompt("yes")


def test_message_ids_and_to_message_id():
    prompt = ChatPromptTogetherRedPajamaINCITEChat()
    for n in (1, 2):
        prompt.add_requester_msg(f"q{n}")
        prompt.add_responder_msg(f"a{n}")
        prompt.set_responder_last_msg_id(f"id{n}")
    assert prompt.find_chat_content_by_message_id("id1").get_message() == "a1"
    assert prompt.find_chat_content_by_message_id("nope") is None
    assert prompt.create_prompt({"to_message_id": "id1"}) == "<human>: q1\n<bot>: a1\n"
    restored = ChatPromptTogetherRedPajamaINCITEChat.from_dict(prompt.to_dict())
    assert restored.find_chat_content_by_message_id("id2").get_message_id() == "id2"


def test_an_empty_message_is_not_an_open_turn():  # 0.3 drew "" as "<human>:" (fixed, see CHANGELOG)
    prompt = ChatPromptTogetherRedPajamaINCITEChat()
    prompt.add_requester_msg("")
    prompt.add_responder_msg(None)
    assert prompt.create_prompt() == "<human>: \n<bot>:"


def tiny():
    path = bundled_model_path()
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def sampled(generator: ChatGenerator, torch_seed: int) -> str:
    torch.manual_seed(torch_seed)
    prompt = ChatPromptTogetherRedPajamaINCITEChat()
    prompt.add_requester_msg("Tell me something")
    prompt.add_responder_msg(None)
    return "".join(generator.stream(prompt))


def test_without_seed_sampling_draws_from_torchs_global_generator():
    model, tokenizer = tiny()
    generator = ChatGenerator(model, tokenizer, "cpu", GenerationParams(temperature=2.0, top_k=None, top_p=None,
                                                                        max_new_tokens=16))
    runs = {seed: sampled(generator, seed) for seed in (42, 42, 1, 2, 3)}
    assert sampled(generator, 42) == runs[42]
    assert len(set(runs.values())) > 1, "different global seeds give different samples"


async def test_fastsession_app_keeps_the_prompt_object_and_gets_no_chatstream_cookie():
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"},
                             chat_prompt_clazz=ChatPromptTogetherRedPajamaINCITEChat)
    store = MemoryStore()
    app = FastAPI()
    app.add_middleware(FastSessionMiddleware, secret_key="k" * 20, store=store, secure=False)
    seen = []

    @app.post("/chat_stream")
    async def chat(request: Request):
        def callback(req, message):
            seen.append(req.state.session.get_session()["chat_prompt"].create_prompt())

        return await chat_stream.handle_chat_stream_request(request, callback=callback)

    await chat_stream.start_queue_worker()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        for text in ("one", "two"):
            response = await client.post("/chat_stream", json={"user_input": text, "regenerate": False})
            assert response.status_code == 200
            assert "chatstream_session" not in response.cookies
        assert set(client.cookies) == {"sid"}
    assert seen == ["<human>: one\n<bot>: one\n", "<human>: one\n<bot>: one\n<human>: two\n<bot>: two\n"]


@pytest.mark.parametrize("value", ["False", "True", 1, None])
async def test_regenerate_that_is_not_a_bool_means_false(value, caplog):
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"}, session_secret=SECRET,
                             client_roles=client_role_free_access)  # get_prompt below
    app = FastAPI()
    chat_stream.append_apis(app, {"all": True})
    await chat_stream.start_queue_worker()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        for text in ("first", "second"):
            response = await client.post("/chat_stream", json={"user_input": text, "regenerate": value})
            assert response.status_code == 200 and response.text.endswith(f"{text}<::EOS::>")
        history = (await client.get("/get_prompt")).json()["history"]["chat_contents"]
    assert [c["message"] for c in history] == ["first", "first", "second", "second"], "two new turns"
    if value is not None:
        assert "not a JSON boolean" in caplog.text


async def test_queue_worker_and_verify_role_for_api():
    roles = {"user": {"apis": {"allow": ["chat_stream"], "auth_method": "nothing", "use_session": True}}}
    chat_stream = ChatStream(use_mock_response=True, client_roles=roles, session_secret=SECRET)
    assert chat_stream.queue_worker_task is None
    task = asyncio.create_task(chat_stream.queue_worker())
    await asyncio.sleep(0)
    assert chat_stream.is_ready
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not chat_stream.is_ready

    request = Request({"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""})
    assert chat_stream.verify_role_for_api(request, "chat_stream") is None
    denied = chat_stream.verify_role_for_api(request, "get_prompt")
    assert denied.status_code == 403 and b"Denied on role layer." in denied.body


def test_mock_type_and_web_ui_options(caplog, monkeypatch):
    monkeypatch.setattr("chatstream.serving._webui._warned", set())  # each note is logged once per process
    chat_stream = ChatStream(use_mock_response=True, mock_type="echo", session_secret=SECRET)
    assert chat_stream.chat_generator.mock_type == "echo"
    with caplog.at_level(logging.WARNING, logger="chatstream"):
        page = asyncio.run(_await(chat_stream.index(None, opts={"ui_init_params": {
            "style_name": "dark_neon", "style_opts": {"debug_window_enabled": True, "ai_icon_url": "https://x/y.png"}}})))
    assert page.status_code == 200 and b"https://x/y.png" in page.body
    assert "style_name='dark_neon' does not exist" in caplog.text and "GET /get_prompt" in caplog.text


async def _await(awaitable):
    return await awaitable


class ScriptedGenerator:
    """Answers each turn with the next list of deltas; keeps the prompt text each turn was generated from."""

    def __init__(self, *answers):
        self.answers, self.prompts = list(answers), []

    def stream(self, chat_prompt, params=None, should_stop=None):
        self.prompts.append(chat_prompt.create_prompt({"omit_last_message": True}))
        yield from self.answers.pop(0)


async def test_an_answer_with_no_token_streams_one_empty_chunk_and_is_a_finished_turn():
    generator = ScriptedGenerator([], ["fine"])
    chat_stream = ChatStream(chat_generator=generator, chat_prompt_clazz=ChatPromptTogetherRedPajamaINCITEChat,
                             session_secret=SECRET, client_roles=client_role_free_access)
    app = FastAPI()
    chat_stream.append_apis(app, {"all": True})
    await chat_stream.start_queue_worker()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        async with client.stream("POST", "/chat_stream", json={"user_input": "hi", "regenerate": False}) as empty:
            chunks = [chunk async for chunk in empty.aiter_text()]
        assert empty.status_code == 200 and "".join(chunks) == "<::EOS::>", "0.3's wire format: one empty chunk"
        history = (await client.get("/get_prompt")).json()["history"]["chat_contents"]
        assert [c["message"] for c in history] == ["hi", ""]
        second = await client.post("/chat_stream", json={"user_input": "again", "regenerate": False})
        assert second.text == "fine<::EOS::>"
    assert generator.prompts[1] == "<human>: hi\n<bot>: \n<human>: again\n<bot>:", "the empty turn is closed"
    console = ChatStream(chat_generator=ScriptedGenerator([]))
    await console.start_queue_worker()
    assert [out async for out in console.handle_console_input("hi")] == [("", "", "end")]
    assert console.chat_prompt_for_single_user_on_console.get_responder_last_msg() == ""
