"""Replay cost: a 128-token chat streamed over the endpoint from a cassette vs. from the generator mock.

Records one chat of the bundled tiny model in probe mode (EOS disabled, so it is exactly 128 tokens),
then times, alternating in one run, the same request against a ChatStream replaying the cassette
through MockTransformer (wait_sec=0) and against one using the generator mock (use_mock_response,
"long" text, no waits, 128 words). Both go through the same HTTP endpoint (httpx ASGITransport),
sessions, admission and worker-thread streaming. Prints the median time per chat and the ratio
(replay / generator mock; the target is <= 1.5).

    python bench/bench_replay.py [--rounds 15] [--new-tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from fastapi import FastAPI
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatstream.bundled import bundled_model_path
from chatstream.chat_stream import ChatStream
from chatstream.replay import MockTransformer

QUESTION = "Hello! Please tell me about cats."


def _app(chat_stream: ChatStream) -> FastAPI:
    app = FastAPI()
    chat_stream.append_apis(app, {"all": True})
    return app


async def _chat(app: FastAPI) -> tuple[float, bytes]:
    """One chat in a new session: seconds until the whole stream arrived, and its bytes."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        start = time.perf_counter()
        async with client.stream("POST", "/chat_stream", json={"user_input": QUESTION}) as response:
            body = b"".join([chunk async for chunk in response.aiter_bytes()])
        elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"the endpoint answered {response.status_code}: {body[:200]!r}")
    return elapsed, body


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    settings = {"temperature": 1.0, "seed": 0, "max_new_tokens": args.new_tokens, "device": "cpu",
                "session_secret": "bench-replay-secret-0123456789"}

    with tempfile.TemporaryDirectory() as parent:
        path = bundled_model_path()
        model, tokenizer = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
        recording = ChatStream(model=model, tokenizer=tokenizer, probe_mode_enabled=True, probe_dir=parent,
                               probe_name="bench", **settings)
        recording.chat_generator.eos_ids = set()  # exactly new_tokens tokens
        await recording.start_queue_worker()
        _, recorded = await _chat(_app(recording))
        await recording.stop_queue_worker()
        size = sum(p.stat().st_size for p in Path(parent, "bench").iterdir())

        mock = MockTransformer(parent_dir_path=parent, dirname="bench", wait_sec=0)
        mock_model = mock.get_model()
        mock_model.to("cpu")
        replaying = ChatStream(model=mock_model, tokenizer=mock.get_tokenizer(),
                               token_sampler=mock.get_token_sampler(), **settings)
        replaying.chat_generator.eos_ids = set()
        generator_mock = ChatStream(use_mock_response=True, mock_params={"type": "long"}, **settings)
        apps = {"replay": _app(replaying), "mock": _app(generator_mock)}
        for chat_stream in (replaying, generator_mock):
            await chat_stream.start_queue_worker()
        times: dict[str, list[float]] = {"replay": [], "mock": []}
        for round_ in range(args.rounds + 1):  # round 0 warms up
            for name, app in apps.items():
                elapsed, body = await _chat(app)
                if name == "replay" and body != recorded:
                    raise AssertionError("the replayed stream differs from the recorded one")
                if round_:
                    times[name].append(elapsed)
        chunks = recorded.count(b"<::EOS::>")
    replay, generator = statistics.median(times["replay"]), statistics.median(times["mock"])
    print(f"new_tokens={args.new_tokens} rounds={args.rounds} cassette={size} bytes stream={len(recorded)} bytes "
          f"chunks={chunks}")
    print(f"cassette replay (MockTransformer) : {replay * 1000:8.2f} ms per chat (median)")
    print(f"generator mock (use_mock_response): {generator * 1000:8.2f} ms per chat (median)")
    print(f"ratio replay/generator mock        : {replay / generator:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    asyncio.run(main())
