"""The concierge app's endpoints, on replayed model output (no model, no GPU needed)."""

import itertools

FINISH = "<::EOS::>"


def answers(body: str) -> list[str]:
    """The successive texts of a ChatStream response: each chunk is the answer so far, then FINISH."""
    assert body.endswith(FINISH)
    return body.split(FINISH)[:-1]


async def test_greets_the_guest(chatstream_client):
    response = await chatstream_client.post("/concierge/ask", json={"user_input": "Hello", "regenerate": False})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    texts = answers(response.text)
    assert len(texts) > 1 and all(later.startswith(earlier) for earlier, later in itertools.pairwise(texts))
    assert texts[-1] == "Hello! How can I help you today?"


async def test_keeps_the_conversation_of_each_guest(chatstream_client):
    first = await chatstream_client.post("/concierge/ask", json={"user_input": "What is your name?",
                                                                 "regenerate": False})
    second = await chatstream_client.post("/concierge/ask", json={"user_input": "Thank you", "regenerate": False})
    assert answers(first.text)[-1] == "I am Tiny Chat, a small demo model."
    assert answers(second.text)[-1] == "You're welcome! 😊"
    status = (await chatstream_client.get("/concierge/status")).json()
    assert status == {"open": True, "guests_waiting": 0, "guests_served_now": 0}


def test_answers_in_japanese(chatstream_sync_client):
    response = chatstream_sync_client.post("/concierge/ask", json={"user_input": "こんにちは", "regenerate": False})
    assert response.status_code == 200
    assert answers(response.text)[-1] == "こんにちは！今日はどんなご用ですか？"


async def test_refuses_a_malformed_request_before_streaming(chatstream_client):
    response = await chatstream_client.post("/concierge/ask", json={"regenerate": False})
    assert response.status_code == 400
    assert "user_input" in response.text
