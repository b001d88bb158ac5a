"""Replay cost, two figures from one run.

(b) The endpoint: a 128-token chat streamed over HTTP (httpx ASGITransport, sessions, admission, worker
    thread) from a cassette (MockTransformer, wait_sec=0) vs. from the generator mock (use_mock_response,
    "long" text, no waits). Replay runs the real decode loop, processors, sampler interface and
    detokeniser per token while the generator mock does no per-token work, so this ratio is expected
    to be large; it is printed for reference.
(a) The replay mechanism itself: ``ChatGenerator.stream`` (the same decode loop, real processors, real
    detokeniser over the real tokenizer) run twice per round, alternating: once over MockModel +
    MockTokenSampler (the mock forward, the cassette lookup, the mock sampler), once over a zero-cost
    stand-in: a model that returns one fixed logits tensor and a sampler that runs the same cached
    processors and then hands out the recorded tokens in order (no draw, no lookup). Both sides decode the
    same tokens: each chat's text is asserted equal to the recorded text before a ratio is printed.
    What is left between them is the cost of replay's lookups. Target: replay mechanism / stand-in <= 1.5x.

The cassette is one chat of the bundled tiny model recorded in probe mode with EOS disabled, so both
sides produce exactly ``--new-tokens`` tokens. The last line printed is the ratio (a).

    python bench/bench_replay.py [--rounds 15] [--new-tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from fastapi import FastAPI
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatstream.bundled import bundled_model_path
from chatstream.cassettes.replay import MockTransformer
from chatstream.engine.chat_prompt import ChatPromptFromTemplate
from chatstream.engine.generation import ChatGenerator, GenerationParams
from chatstream.engine.sampling import SamplingParams, apply_processors, build_processors
from chatstream.engine.token_sampler import TokenSampler
from chatstream.serving.chat_stream import ChatStream

QUESTION = "Hello! Please tell me about cats."


class _StandInCache:
    """A cache that only counts positions (what the decode loop's cache check reads)."""

    def __init__(self) -> None:
        self.length = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length


class _StandInOutput:
    __slots__ = ("cache", "logits")

    def __init__(self, logits: torch.Tensor, cache: _StandInCache) -> None:
        self.logits, self.cache = logits, cache


class ZeroCostModel:
    """Returns the same (1, 1, vocab) logits for every forward: a model that costs nothing to run."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits.reshape(1, 1, -1).clone()
        self.device = torch.device("cpu")
        self.generation_config = None

    def __call__(self, *args: Any, **kwargs: Any) -> _StandInOutput:
        return self.forward(*args, **kwargs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, cache: Any = None,
                use_cache: bool = True, logits_to_keep: int = 0) -> _StandInOutput:
        cache = cache if cache is not None else _StandInCache()
        cache.length += input_ids.shape[1]
        return _StandInOutput(self.logits, cache)


class RecordedTokensSampler(TokenSampler):
    """The stand-in's sampler: the same processors as MockTokenSampler, cached as it caches them (built
    once, kept for the params object of the last call), then the recorded tokens in order. ``rewind()``
    starts a chat over."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tokens
        self.next = 0
        self._last_plan: tuple = (None, None, None)

    def rewind(self) -> None:
        self.next = 0

    def sample(self, logits: torch.Tensor, input_ids: torch.Tensor, params: SamplingParams,
               generator: torch.Generator | None = None) -> int:
        vocab_size = logits.shape[-1]
        last = self._last_plan
        if last[0] is params and last[1] == vocab_size:
            processors = last[2]
        else:
            processors = build_processors(params, vocab_size=vocab_size)
            self._last_plan = (params, vocab_size, processors)
        apply_processors(processors, input_ids, logits)
        token = self.tokens[self.next]
        self.next += 1
        return token


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


def _prompt(tokenizer: Any) -> ChatPromptFromTemplate:
    prompt = ChatPromptFromTemplate(tokenizer)
    prompt.add_requester_msg(QUESTION)
    prompt.add_responder_msg(None)
    return prompt


def _mechanism(parent: str, tokenizer: Any, params: GenerationParams, rounds: int, recorded_text: str) -> tuple:
    """(a): seconds per chat (median) of the replay mechanism and of the zero-cost stand-in."""
    mock = MockTransformer(parent_dir_path=parent, dirname="bench", wait_sec=0)
    replay = ChatGenerator(mock.get_model(), tokenizer, "cpu", params, mock.get_token_sampler())
    first_forward = next(iter(mock.cassette.forwards()))
    recorded_tokens = [sample["tok"] for sample in mock.cassette.samples()]  # one chat: in recorded order
    sampler = RecordedTokensSampler(recorded_tokens)
    stand_in = ChatGenerator(ZeroCostModel(first_forward["logits"].full()), tokenizer, "cpu", params, sampler)
    for generator in (replay, stand_in):
        generator.eos_ids = set()
    generators = {"replay": replay, "stand-in": stand_in}
    times: dict[str, list[float]] = {name: [] for name in generators}
    for round_ in range(rounds + 1):  # round 0 warms up
        for name, generator in generators.items():
            prompt = _prompt(tokenizer)
            sampler.rewind()
            start = time.perf_counter()
            text = "".join(generator.stream(prompt))
            elapsed = time.perf_counter() - start
            if text != recorded_text:  # both sides did the same work: the recorded tokens, the recorded text
                raise AssertionError(f"the {name} answer differs from the recorded one: {text[:80]!r}")
            if name == "stand-in" and sampler.next != len(recorded_tokens):
                raise AssertionError(f"the stand-in sampled {sampler.next} tokens, not {len(recorded_tokens)}")
            if round_:
                times[name].append(elapsed)
    fastest = {name: min(seconds) for name, seconds in times.items()}
    print(f"(a) fastest chat: replay {fastest['replay'] * 1000:.2f} ms, stand-in {fastest['stand-in'] * 1000:.2f} ms "
          f"({fastest['replay'] / fastest['stand-in']:.2f}x; the medians below are the figure)")
    return statistics.median(times["replay"]), statistics.median(times["stand-in"])


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
        recorded_text = recorded.split(b"<::EOS::>")[-2].decode()

        mock = MockTransformer(parent_dir_path=parent, dirname="bench", wait_sec=0)
        replaying = ChatStream(model=mock.get_model(), tokenizer=mock.get_tokenizer(),
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
                if name == "mock" and not (body.endswith(b"<::EOS::>") and len(body) >= len(recorded) // 2):
                    raise AssertionError(f"the generator mock streamed {len(body)} bytes, not a whole long answer")
                if round_:
                    times[name].append(elapsed)
        chunks = recorded.count(b"<::EOS::>")
        params = GenerationParams(temperature=1.0, seed=0, max_new_tokens=args.new_tokens)
        mechanism, stand_in = _mechanism(parent, tokenizer, params, args.rounds, recorded_text)
    replay, generator = statistics.median(times["replay"]), statistics.median(times["mock"])
    print(f"new_tokens={args.new_tokens} rounds={args.rounds} cassette={size} bytes stream={len(recorded)} bytes "
          f"chunks={chunks}")
    print("(b) over the endpoint")
    print(f"cassette replay (MockTransformer) : {replay * 1000:8.2f} ms per chat (median)")
    print(f"generator mock (use_mock_response): {generator * 1000:8.2f} ms per chat (median)")
    print(f"endpoint replay/generator mock: {replay / generator:.2f}x (for reference: the mock does no per-token "
          "work)")
    print("(a) the replay mechanism, same decode loop, processors and detokeniser")
    print(f"MockModel + cassette lookup + MockTokenSampler: {mechanism * 1000:8.2f} ms per chat (median)")
    print(f"zero-cost stand-in, same processors, recorded tokens: {stand_in * 1000:8.2f} ms per chat (median)")
    print(f"replay mechanism/zero-cost stand-in: {mechanism / stand_in:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
