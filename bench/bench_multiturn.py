"""Multi-turn chat with and without the prefix cache (issue 20): a turn should cost its new tokens only.

Starts two real `chatstream serve` subprocesses on loopback (greedy, 48 new tokens): one with the prefix
cache (its default budget) and one with `--prefix-cache-mb 0`, each keeping its sessions in a SQLite file of
its own, both with the same PYTHONHASHSEED (printed; two otherwise identical servers differed by up to 4.6% in
tokens/s with seeds of their own). After a warm-up on each:

1. `/chat_stream` sessions of 10 turns: time to first token (TTFT) of each turn;
2. rounds of 8 concurrent sessions of 3 turns each: generated tokens per second;
3. the OpenAI endpoint, conversations whose whole history is resent on each of 10 calls: TTFT per call.

Each measurement runs on one server then the other, the order alternating, so the machine's load falls
on both alike. 1 and 3 run ``REPEATS`` conversations and a turn's TTFT is the median over them (one sample
per turn swings with the load); 2 runs ``THROUGHPUT_ROUNDS`` rounds (``--throughput-rounds``) and reports
the median per-round ratio, with the rounds a +-2% figure needs at the spread seen (a round's clock stops
before its /metrics scrape). On the bundled model the rounds are spread over ``THROUGHPUT_PAIRS`` pairs of
servers (``--throughput-pairs``), the first pair's after 1, the others' on pairs started afresh, each pair
with a hash seed of its own: a pair's seed moved the figure by a few percent, as much as the cache does.

Every conversation, and each warm-up, asks its own questions, starting with its own token: turn 1 then
finds the system prompt cached (as on any server that has answered once) and prefills its question, as
turn 10 prefills its own; it never finds its whole prompt cached. The bench asserts that every
conversation's call N prefilled as many new tokens as any other's, so each median compares like with like.

The last line: `TTFT turn 10 / turn 1: <r>x (cache off: <r0>x); 8-session tokens/s cache on/off: <s>x`.
Targets: r <= 1.3 and s >= 1.0; and the OpenAI call 10 within 1.3x of call 1 (printed above it). The
floor line: the model alone (in this process) prefilling call 1's and call 10's new tokens on caches of
their cached lengths (what a perfect prefix cache would leave), and call 10's new tokens on call 1's
cache (what the history alone costs).
Run with OMP_NUM_THREADS=1 on a shared machine (each server then gets one thread).

    python bench/bench_multiturn.py [--model DIR] [--throughput-rounds N] [--throughput-pairs K]
"""

from __future__ import annotations

import argparse
import asyncio
import http.cookiejar
import json
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

MAX_NEW_TOKENS = 48
REPEATS = 3  # conversations per measurement; each turn's figure is the median over them
HASH_SEED = int(os.environ.get("PYTHONHASHSEED") or random.randrange(1, 2**32))  # the first pair's; printed
# Rounds of 8 concurrent sessions (the on/off figure is the median of per-round ratios): the bundled model's take
# about a second and swing +-5%, a real model's take tens of seconds.
THROUGHPUT_ROUNDS = {"bundled": 60, "model": 5}
# Server pairs the rounds are spread over, each pair started afresh with a hash seed of its own (both servers of
# a pair share it: two identical servers with seeds of their own differed by up to 4.6% in tokens/s). A pair's
# seed (its processes' memory layout) still moved the bundled model's on/off figure by a few percent, as much as
# the cache.
THROUGHPUT_PAIRS = {"bundled": 4, "model": 1}


def questions(conversation: str) -> list[str]:
    """The 10 questions of one conversation. Each conversation asks its own, and its first word is
    ``conversation``'s, so no turn reuses another conversation's tokens from the cache: only the system
    prompt is shared, and every conversation's turn N prefills as many tokens as any other's."""
    return [f"{conversation}: question {i}, tell me something about the number {i * 7} and why it matters."
            for i in range(10)]


# Conversation names: single letters, each one token of its own in common tokenizers, so two conversations
# part at their first question's first token and their questions have the same number of tokens.
NAMES = tuple("ABCDEFGHIJK")
THROUGHPUT_NAMES = "abcdefghijklmnopqrstuvwxyzLMNOPQRSTUVWXYZ"


def throughput_names(round_index: int) -> list[str]:
    """The 8 sessions of a throughput round, each round its own (single letters, then a letter and a digit)."""
    letters = len(THROUGHPUT_NAMES)
    return [THROUGHPUT_NAMES[index % letters] + (str(index // letters) if index >= letters else "")
            for index in range(8 * round_index, 8 * round_index + 8)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(model: str | None, cache_mb: float | None, state_dir: str, seed: int) -> tuple[subprocess.Popen, str]:
    """A `chatstream serve` on a free port, keeping its sessions in a SQLite file of its own under ``state_dir``
    (the default store, but never shared with the other server nor left in the user's state directory), with
    PYTHONHASHSEED ``seed``, the same for both servers of a pair (``THROUGHPUT_PAIRS`` says why)."""
    port = free_port()
    command = [sys.executable, "-m", "chatstream.serving.cli", "serve", "--port", str(port), "--temperature", "0",
               "--max-new-tokens", str(MAX_NEW_TOKENS), "--concurrency", "8", "--queue-size", "16",
               "--log-level", "warning", "--session-store", f"sqlite://{state_dir}/sessions-{port}.sqlite3"]
    if model:
        command += ["--model", model]
    if cache_mb is not None:
        command += ["--prefix-cache-mb", str(cache_mb)]
    process = subprocess.Popen(command, env={**os.environ, "PYTHONHASHSEED": str(seed)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise SystemExit("the server did not start")
        time.sleep(0.2)


async def chat_turn(client: httpx.AsyncClient, text: str) -> tuple[float, int]:
    """(TTFT seconds, characters answered) of one /chat_stream turn in the client's session."""
    sent, first, last = time.perf_counter(), None, b""
    async with client.stream("POST", "/chat_stream", json={"user_input": text}) as response:
        assert response.status_code == 200, response.status_code
        async for data in response.aiter_bytes():
            if first is None and data.strip(b"<::EOS::>\n "):
                first = time.perf_counter() - sent
            last = data or last
    return (first if first is not None else time.perf_counter() - sent), len(last)


def session_client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=300)


async def one_session(url: str, turns: int, conversation: str) -> list[float]:
    async with session_client(url) as client:
        return [(await chat_turn(client, text))[0] for text in questions(conversation)[:turns]]


async def sessions_throughput(url: str, names: list[str], turns: int) -> float:
    """Generated tokens per second of one concurrent session per name, ``turns`` turns each (token counts read
    from /metrics before and after)."""
    before = generated_tokens(url)
    started = time.perf_counter()
    await asyncio.gather(*(one_session(url, turns, name) for name in names))
    seconds = time.perf_counter() - started  # before the /metrics scrape, which is no part of the sessions' work
    return (generated_tokens(url) - before) / seconds


def generated_tokens(url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=30).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "chatstream_generation_tokens_total")


async def openai_resent(url: str, calls: int, conversation: str) -> tuple[list[float], list[tuple[int, int]]]:
    """TTFT of each call of one conversation whose whole history is resent; and its (prompt_tokens,
    cached_tokens) as the usage reports them."""
    no_cookies = httpx.Cookies(http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[])))
    messages: list[dict] = [{"role": "system", "content": "You are a helpful assistant."}]
    ttfts, cached = [], []
    async with httpx.AsyncClient(base_url=url, timeout=300, cookies=no_cookies) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]
        for text in questions(conversation)[:calls]:
            messages.append({"role": "user", "content": text})
            body = {"model": model, "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
            sent, first, text = time.perf_counter(), None, ""
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                assert response.status_code == 200, response.status_code
                async for line in response.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                        cached.append((usage["prompt_tokens"],
                                       usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)))
                    for choice in chunk["choices"]:
                        content = choice["delta"].get("content")
                        if content:
                            first = first if first is not None else time.perf_counter() - sent
                            text += content
            ttfts.append(first if first is not None else time.perf_counter() - sent)
            messages.append({"role": "assistant", "content": text})
    return ttfts, cached


def per_turn_median(runs: list[list[float]]) -> list[float]:
    return [statistics.median(turn) for turn in zip(*runs, strict=True)]


def order(urls: dict[str, str], index: int) -> list[str]:
    """The servers' labels in the order measurement ``index`` runs them: alternating, so load on the machine
    falls on both alike."""
    return list(urls) if index % 2 == 0 else list(reversed(urls))


async def warm_up(urls: dict[str, str]) -> None:
    """One turn on each server with its own question, so the system prompt is cached (as on any server that has
    answered once) but no measured turn finds its own question cached."""
    for url in urls.values():
        await one_session(url, 1, NAMES[0])


async def measure(urls: dict[str, str], throughput_rounds: int) -> dict[str, dict]:
    """Both servers, interleaved: each conversation (and each throughput round) runs on one server then the
    other (``order``)."""
    results: dict[str, dict] = {label: {"turns": [], "throughput": [], "openai": [], "usages": []} for label in urls}
    await warm_up(urls)
    for r in range(REPEATS):
        for label in order(urls, r):
            results[label]["turns"].append(await one_session(urls[label], 10, NAMES[2 + r]))
    await throughput_rounds_on(urls, range(throughput_rounds), results)
    for url in urls.values():
        # The OpenAI calls' own warm-up (their system message differs from the session's), just before them:
        # the throughput rounds may have evicted an earlier one.
        await openai_resent(url, 1, NAMES[1])
    for r in range(REPEATS):
        for label in order(urls, r):
            ttfts, usage = await openai_resent(urls[label], 10, NAMES[2 + REPEATS + r])
            results[label]["openai"].append(ttfts)
            results[label]["usages"].append(usage)
    for result in results.values():
        result["turns"] = per_turn_median(result["turns"])
        result["openai"] = per_turn_median(result["openai"])
        result["new"] = equal_new_tokens(result["usages"])
        result["cached"] = result["usages"][-1]
    return results


async def throughput_rounds_on(urls: dict[str, str], rounds: range, results: dict[str, dict]) -> None:
    """Rounds of 8 concurrent 3-turn sessions on both servers (``order``), each round's tokens/s appended to
    ``results[label]["throughput"]``; round r's sessions are ``throughput_names(r)``."""
    for r in rounds:
        for label in order(urls, r):
            results[label]["throughput"].append(await sessions_throughput(urls[label], throughput_names(r), 3))


async def fresh_pair_throughput(urls: dict[str, str], rounds: range, results: dict[str, dict]) -> None:
    """``throughput_rounds_on`` on a pair just started, after ``measure``'s warm-up."""
    await warm_up(urls)
    await throughput_rounds_on(urls, rounds, results)


def start_pair(model: str | None, state_dir: str, seed: int) -> dict[str, tuple[subprocess.Popen, str]]:
    return {label: start(model, cache_mb, state_dir, seed) for label, cache_mb in (("on", None), ("off", 0))}


def stop_pair(servers: dict[str, tuple[subprocess.Popen, str]]) -> None:
    for process, _ in servers.values():
        process.terminate()
        process.wait(timeout=30)


def equal_new_tokens(usages: list[list[tuple[int, int]]]) -> list[int]:
    """Each call's new (not cached) prompt tokens, asserted equal across the conversations whose medians are
    taken: a turn's median must compare the same work (with the cache off, cached is 0 and prompt lengths
    are compared instead)."""
    new = [[prompt - cached for prompt, cached in usage] for usage in usages]
    assert all(n == new[0] for n in new), f"conversations prefilled different numbers of new tokens per call: {new}"
    return new[0]


def prefill_floor(model_dir: str | None, shapes: list[tuple[int, int]], rounds: int = 7) -> list[float]:
    """Median seconds the model alone (in this process, no server) takes to prefill ``new`` tokens on a cache
    already holding ``cached`` positions, for each ``(cached, new)`` of ``shapes``: what a turn costs with a
    perfect prefix cache. The shapes alternate round by round so load hits them alike."""
    import torch
    from transformers import AutoModelForCausalLM

    from chatstream.bundled import bundled_model_path
    from chatstream.engine.attention_kernel import prefer_grouped_query_sdpa
    from chatstream.engine.generation import accepts_logits_to_keep
    from chatstream.engine.model_cache import cache_argument, output_cache
    from chatstream.engine.prefix_cache import copy_prefix

    model = AutoModelForCausalLM.from_pretrained(model_dir or bundled_model_path()).eval()
    prefer_grouped_query_sdpa(model.device)  # the attention kernel the server's engine chose
    keep = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}  # as the decode loop's prefill
    longest = max(cached + new for cached, new in shapes)
    ids = torch.randint(10, model.config.vocab_size - 10, (1, longest), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = output_cache(model(input_ids=ids, use_cache=True))
        times: list[list[float]] = [[] for _ in shapes]
        for _ in range(rounds):
            for index, (cached, new) in enumerate(shapes):
                cache = copy_prefix(full, cached)  # outside the timing
                started = time.perf_counter()
                mask = torch.ones((1, cached + new), dtype=torch.long)
                model(input_ids=ids[:, cached:cached + new], attention_mask=mask, use_cache=True,
                      **keep, **{cache_argument(model): cache})
                times[index].append(time.perf_counter() - started)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="local HF model directory (default: the bundled tiny model)")
    parser.add_argument("--throughput-rounds", type=int, default=None,
                        help=f"rounds of 8 concurrent sessions (default: {THROUGHPUT_ROUNDS['bundled']} on the bundled "
                             f"model, {THROUGHPUT_ROUNDS['model']} on --model)")
    parser.add_argument("--throughput-pairs", type=int, default=None,
                        help=f"server pairs the rounds are spread over, each with a hash seed of its own "
                             f"(default: {THROUGHPUT_PAIRS['bundled']} on the bundled model, "
                             f"{THROUGHPUT_PAIRS['model']} on --model)")
    args = parser.parse_args()
    kind = "model" if args.model else "bundled"
    rounds = args.throughput_rounds or THROUGHPUT_ROUNDS[kind]
    pairs = max(1, min(args.throughput_pairs or THROUGHPUT_PAIRS[kind], rounds))
    seeds = [1 + (HASH_SEED - 1 + k) % (2**32 - 1) for k in range(pairs)]
    shares = [range(rounds * k // pairs, rounds * (k + 1) // pairs) for k in range(pairs)]
    with tempfile.TemporaryDirectory() as state_dir:
        servers = start_pair(args.model, state_dir, seeds[0])
        try:
            results = asyncio.run(measure({label: url for label, (_, url) in servers.items()}, len(shares[0])))
        finally:
            stop_pair(servers)
        for seed, share in zip(seeds[1:], shares[1:], strict=True):
            servers = start_pair(args.model, state_dir, seed)
            try:
                asyncio.run(fresh_pair_throughput({label: url for label, (_, url) in servers.items()}, share,
                                                  results))
            finally:
                stop_pair(servers)
    on_rounds, off_rounds = results["on"]["throughput"], results["off"]["throughput"]
    results["on"]["throughput_ratios"] = sorted(a / b for a, b in zip(on_rounds, off_rounds, strict=True))
    print(f"model: {args.model or 'bundled tiny-chat'}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
          f"{rounds} throughput rounds over {pairs} server pair(s), PYTHONHASHSEED per pair (both servers alike): "
          f"{', '.join(map(str, seeds))}")
    for label, result in results.items():
        turns = " ".join(f"{t * 1000:.0f}" for t in result["turns"])
        openai = " ".join(f"{t * 1000:.0f}" for t in result["openai"])
        print(f"cache {label:3s}: /chat_stream TTFT per turn (ms): {turns}")
        rounds = " ".join(f"{t:.1f}" for t in result["throughput"])
        print(f"cache {label:3s}: 8 sessions x 3 turns, per round: {rounds} generated tokens/s")
        print(f"cache {label:3s}: OpenAI resent history TTFT per call (ms): {openai}; cached_tokens: "
              f"{[cached for _, cached in result['cached']]}")
    on, off = results["on"], results["off"]
    (prompt_1, cached_1), (prompt_10, cached_10) = on["cached"][0], on["cached"][-1]
    new_1, new_10 = prompt_1 - cached_1, prompt_10 - cached_10
    print(f"OpenAI new (prefilled) prompt tokens per call, equal in every conversation: {on['new']}")
    floor_1, floor_10, floor_same = prefill_floor(args.model, [(cached_1, new_1), (cached_10, new_10),
                                                               (cached_1, new_10)])
    print(f"floor: the model alone prefilling call 1's {new_1} new tokens after {cached_1} cached: "
          f"{floor_1 * 1000:.0f} ms; call 10's {new_10} after {cached_10}: {floor_10 * 1000:.0f} ms "
          f"({floor_10 / floor_1:.2f}x); {new_10} after {cached_1}: {floor_same * 1000:.0f} ms, so the history "
          f"alone costs {floor_10 / floor_same:.2f}x (attention over it, which no cache removes)")
    print(f"OpenAI resent history TTFT call 10 / call 1: {on['openai'][-1] / on['openai'][0]:.2f}x "
          f"(cache off: {off['openai'][-1] / off['openai'][0]:.2f}x; target <= 1.3x)")
    print(f"TTFT turn 10 / turn 1: {on['turns'][-1] / on['turns'][0]:.2f}x "
          f"(cache off: {off['turns'][-1] / off['turns'][0]:.2f}x); "
          f"8-session tokens/s cache on/off: {statistics.median(on['throughput_ratios']):.2f}x "
          f"(per round: {' '.join(f'{r:.2f}' for r in on['throughput_ratios'])}; {spread(on['throughput_ratios'])})")


def spread(ratios: list[float]) -> str:
    """How far ``ratios``' figure can be trusted: median, mean with its 95% interval, and the rounds a +-2%
    figure needs (``bench_serving.rounds_for``)."""
    from bench_serving import rounds_for

    if len(ratios) < 2:
        return "one round"
    relative = statistics.stdev(ratios) / statistics.mean(ratios)
    return (f"median {statistics.median(ratios):.3f}, mean {statistics.mean(ratios):.3f} +- "
            f"{1.96 * relative / math.sqrt(len(ratios)):.1%} (95%), stdev {relative:.1%}, +-2% needs "
            f"{rounds_for(ratios, 0.02)} rounds")


if __name__ == "__main__":
    main()
