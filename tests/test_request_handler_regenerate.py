"""Regenerate with a seed: a new draw per regeneration, the same draws again in a new session, recorded and
replayed (SimpleSessionRequestHandler with the bundled model, probe mode and MockTransformer)."""

import functools

import httpx
from fastapi import FastAPI
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatstream.bundled import bundled_model_path
from chatstream.cassettes.replay import MockTransformer
from chatstream.serving.chat_stream import ChatStream

SECRET = "0123456789abcdef-test"
SETTINGS = {"temperature": 4.0, "top_k": 50, "seed": 0, "max_new_tokens": 10, "session_secret": SECRET,
            "device": "cpu"}


@functools.cache
def bundled():
    path = bundled_model_path()
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


async def _answers(chat_stream, requests):
    """The final answer of each request, in one session."""
    app = FastAPI()
    chat_stream.append_apis(app, {"all": True})
    await chat_stream.start_queue_worker()
    out = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        for body in requests:
            response = await client.post("/chat_stream", json=body)
            assert response.status_code == 200, response.text
            out.append(response.text.split("<::EOS::>")[-2])
    await chat_stream.stop_queue_worker()
    return out


ASK, AGAIN = {"user_input": "Hello"}, {"regenerate": True}
NEXT = {"user_input": "Do you like cats?"}


async def test_each_regeneration_is_a_new_draw_reproducible_live_recorded_and_replayed(tmp_path):
    model, tokenizer = bundled()
    requests = [ASK, AGAIN, AGAIN, NEXT, AGAIN]
    recording = ChatStream(model=model, tokenizer=tokenizer, probe_mode_enabled=True, probe_dir=tmp_path,
                           probe_name="regen", **SETTINGS)
    recorded = await _answers(recording, requests)
    first, again, third, cats, cats_again = recorded
    assert len({first, again, third}) == 3, recorded  # each regeneration draws anew
    assert cats_again != cats
    live = await _answers(ChatStream(model=model, tokenizer=tokenizer, **SETTINGS), requests)
    assert live == recorded  # the seed, the turn and the regeneration count fix every draw
    mock = MockTransformer(parent_dir_path=tmp_path, dirname="regen")
    replaying = ChatStream(model=mock.get_model(), tokenizer=mock.get_tokenizer(),
                           token_sampler=mock.get_token_sampler(), **SETTINGS)
    assert await _answers(replaying, requests) == recorded


async def test_without_a_seed_or_with_greedy_decoding_nothing_changes():
    model, tokenizer = bundled()
    greedy = await _answers(ChatStream(model=model, tokenizer=tokenizer, **{**SETTINGS, "temperature": 0}),
                            [ASK, AGAIN, AGAIN])
    assert len(set(greedy)) == 1
