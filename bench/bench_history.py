"""A chat request's cost stays flat as the stored history grows (issue 10, item 4).

Sends one request through ChatStream (bundled tiny model, `max_new_tokens=1`, `context_len=1024`) in a
session whose history holds 200, 400 and 800 turns, and times it. Before the fix each dropped turn
re-rendered and re-tokenised the whole prompt, twice per request (1.2 s, 6.3 s, 37 s); now the prompt is
tokenised once per request and trimming tokenises about what is kept. The target: the 800-turn request
costs at most 2x the 200-turn one. `max_history_turns` is raised so the sessions can hold that much.

    python bench/bench_history.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx
from fastapi import FastAPI
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatstream.bundled import bundled_model_path
from chatstream.serving.chat_stream import ChatStream
from chatstream.serving.sessions import PROMPT_KEY

SECRET = "0123456789abcdef-bench"


async def request_time(chat_stream: ChatStream, client: httpx.AsyncClient, turns: int, repeats: int) -> float:
    prompt = chat_stream.new_chat_prompt()
    for i in range(turns):
        prompt.add_requester_msg(f"question number {i} about the weather today, and a little more text")
        prompt.add_responder_msg(f"answer number {i}: it is sunny and warm, as it was yesterday")
    best = float("inf")
    for _ in range(repeats):
        session_id = client.cookies["chatstream_session"]
        await chat_stream.sessions.store.save(chat_stream.sessions._signer.unsign(session_id).decode(),
                                              {"chat_prompt": {PROMPT_KEY: prompt.to_dict()}})
        start = time.perf_counter()
        response = await client.post("/chat_stream", json={"user_input": "and tomorrow?"})
        best = min(best, time.perf_counter() - start)
        assert response.status_code == 200 and response.text.endswith("<::EOS::>"), response.text
        stored = await chat_stream.sessions.store.load(chat_stream.sessions._signer.unsign(session_id).decode())
        assert len(stored["chat_prompt"][PROMPT_KEY]["chat_contents"]) == 2 * (turns + 1), "the turn was not stored"
    return best


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    path = bundled_model_path()
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    chat_stream = ChatStream(model=model, tokenizer=tokenizer, device="cpu", session_secret=SECRET,
                             max_new_tokens=1, context_len=1024, max_history_turns=10_000)
    app = FastAPI(lifespan=chat_stream.lifespan)
    chat_stream.append_apis(app, {"all": True})
    await chat_stream.start_queue_worker()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        await client.post("/chat_stream", json={"user_input": "hello"})  # a session cookie
        times = {turns: await request_time(chat_stream, client, turns, args.repeats) for turns in (200, 400, 800)}
    for turns, seconds in times.items():
        print(f"{turns:4d} turns: {seconds * 1000:8.1f} ms per request")
    print(f"ratio 800/200 turns: {times[800] / times[200]:.2f} (target <= 2.0)")


if __name__ == "__main__":
    asyncio.run(main())
