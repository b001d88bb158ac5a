"""ChatStream's HTTP endpoints on the bundled tiny model's real output, replayed from cassettes.

These tests use the pytest_chatstream plugin's fixtures: a plain run replays the committed cassettes
under fixtures/cassettes/tests/test_endpoints_cassette/ (no model is loaded); re-record them with

    pytest tests/test_endpoints_cassette.py --probe --probe-model=fixtures/tiny-chat

The answers checked are the tiny model's canned replies (it was trained to give them), decoded with
``top_k=1`` so that a reader can check them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.parse

import httpx
import pytest

from chatstream.serving.client_roles import client_role_free_access

FINISH = "<::EOS::>"
GREETING = "Hello! How can I help you today?"


@pytest.fixture
def chatstream_config() -> dict:
    # free access: the tests read /get_prompt and set generation parameters
    return {"seed": 0, "top_k": 1, "max_new_tokens": 32, "client_roles": client_role_free_access}


def ask(text: str, regenerate: bool = False) -> dict:
    return {"user_input": text, "regenerate": regenerate}


def answers(body: str) -> list[str]:
    """The successive texts of a response: each chunk is the answer so far followed by FINISH."""
    assert body.endswith(FINISH), body[-40:]
    return body.split(FINISH)[:-1]


async def history(client: httpx.AsyncClient) -> list[tuple[str, str | None]]:
    data = (await client.get("/get_prompt")).json()
    return [(c["role"], c["message"]) for c in data["history"]["chat_contents"]] if data.get("history") else []


async def test_chat_stream_streams_growing_text_then_the_finish_token(chatstream_client: httpx.AsyncClient) -> None:
    response = await chatstream_client.post("/chat_stream", json=ask("Hello"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-chatstream-last-generated-message-id"]
    texts = answers(response.text)
    assert len(texts) > 3 and all(later.startswith(earlier) for earlier, later in itertools.pairwise(texts))
    assert texts[-1] == GREETING


async def test_each_turn_sees_the_conversation_so_far(chatstream_client: httpx.AsyncClient) -> None:
    name = await chatstream_client.post("/chat_stream", json=ask("What is your name?"))
    thanks = await chatstream_client.post("/chat_stream", json=ask("Thank you"))
    assert answers(name.text)[-1] == "I am Tiny Chat, a small demo model."
    assert answers(thanks.text)[-1] == "You're welcome! 😊"
    assert await history(chatstream_client) == [
        ("user", "What is your name?"), ("assistant", "I am Tiny Chat, a small demo model."),
        ("user", "Thank you"), ("assistant", "You're welcome! 😊"),
    ]
    prompt = urllib.parse.unquote((await chatstream_client.get("/get_prompt")).json()["prompt"])
    assert prompt.count("<|im_start|>assistant\n") == 2


async def test_regenerate_replaces_the_last_answer(chatstream_client: httpx.AsyncClient) -> None:
    await chatstream_client.post("/chat_stream", json=ask("Hello"))
    again = await chatstream_client.post("/chat_stream", json=ask("", regenerate=True))
    assert again.status_code == 200
    assert answers(again.text)[-1] == GREETING
    assert await history(chatstream_client) == [("user", "Hello"), ("assistant", GREETING)]


async def test_clear_context_forgets_the_conversation(chatstream_client: httpx.AsyncClient) -> None:
    await chatstream_client.post("/chat_stream", json=ask("Do you like cats?"))
    cleared = await chatstream_client.post("/clear_context")
    assert cleared.json()["success"] is True
    assert await history(chatstream_client) == []
    dogs = await chatstream_client.post("/chat_stream", json=ask("Do you like dogs?"))
    assert answers(dogs.text)[-1] == "Dogs are great 🐶! They are loyal friends."
    assert [role for role, _ in await history(chatstream_client)] == ["user", "assistant"]


async def test_multibyte_answers_stream_whole_characters(chatstream_client: httpx.AsyncClient) -> None:
    response = await chatstream_client.post("/chat_stream", json=ask("こんにちは"))
    texts = answers(response.content.decode("utf-8"))  # strict: a split character would raise
    assert texts[-1] == "こんにちは！今日はどんなご用ですか？"
    assert "\ufffd" not in response.text


async def test_set_generation_params_shortens_the_next_answer(chatstream_client: httpx.AsyncClient) -> None:
    updated = await chatstream_client.post("/set_generation_params", json={"max_new_tokens": 3})
    assert updated.json()["generation_params"]["max_new_tokens"] == 3
    short = answers((await chatstream_client.post("/chat_stream", json=ask("Hello"))).text)
    assert len(short) == 3 and GREETING.startswith(short[-1]) and short[-1] != GREETING


async def test_sessions_are_served_concurrently_and_kept_apart(
    chatstream_client: httpx.AsyncClient, chatstream_app: object
) -> None:
    transport = httpx.ASGITransport(app=chatstream_app)  # a second browser: its own cookie, same app
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
        cats, weather = await asyncio.gather(
            chatstream_client.post("/chat_stream", json=ask("Do you like cats?")),
            other.post("/chat_stream", json=ask("How is the weather?")),
        )
        assert answers(cats.text)[-1] == "I love cats 🐱! They are cute and playful."
        assert answers(weather.text)[-1] == "It is sunny and warm today. ☀️"
        assert [m for _, m in await history(other)] == ["How is the weather?", "It is sunny and warm today. ☀️"]
    assert (await history(chatstream_client))[0] == ("user", "Do you like cats?")
    load = (await chatstream_client.get("/get_load")).json()["chatstream_workers"][0]
    assert (load["running"], load["waiting"]) == (0, 0)


@pytest.mark.parametrize(
    "chatstream_config", [{"seed": 11, "temperature": 0.9, "top_k": 40, "max_new_tokens": 24,
                           "client_roles": client_role_free_access}], ids=["t0.9"]
)
async def test_sampled_answers_replay_exactly(chatstream_client: httpx.AsyncClient) -> None:
    first = answers((await chatstream_client.post("/chat_stream", json=ask("Tell me about dogs"))).text)[-1]
    second = answers((await chatstream_client.post("/chat_stream", json=ask("And cats?"))).text)[-1]
    assert first and second
    assert [m for _, m in await history(chatstream_client)] == ["Tell me about dogs", first, "And cats?", second]


async def test_chat_stream_fixture_answers_the_console(chat_stream: object) -> None:
    steps = [step async for step in chat_stream.handle_console_input("How are you?")]
    assert steps[0][2] == "begin" and steps[-1][2] == "end"
    assert steps[-1][0] == "I'm fine, thank you! How about you?"
    assert "".join(delta for _, delta, _ in steps) == steps[-1][0]


def test_plain_def_tests_use_the_sync_client(chatstream_sync_client: object) -> None:
    response = chatstream_sync_client.post("/chat_stream", json=ask("Goodbye"))
    assert answers(response.text)[-1] == "Goodbye! Have a nice day! 👋"
    params = chatstream_sync_client.get("/get_generation_params").json()["generation_params"]
    assert (params["top_k"], params["seed"]) == (1, 0)
    assert json.loads(chatstream_sync_client.get("/health").text)
