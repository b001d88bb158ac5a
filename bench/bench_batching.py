"""Continuous batching throughput: the batched engine, the per-stream loop and transformers' continuous batching.

At 1, 4, 8 and 16 concurrent streams, each greedy with 128 new tokens (EOS ignored, so each makes
exactly 128), on the bundled tiny model on CPU, it times:
- batched: ``BatchedChatGenerator`` (one scheduler thread, one forward per step for all streams),
  the streams read from N threads as ChatStream's workers do;
- serial: today's per-stream loop, ``ChatGenerator.events`` in N threads;
- transformers-CB: transformers' continuous batching (paged attention) through one persistent
  ``ContinuousBatchingManager`` (``model.init_continuous_batching``), given a paged cache sized for the run
  (its default sizes the cache from free memory, which on CPU takes tens of seconds), on its own copy of the
  model since it switches the attention implementation.
The same thing is timed on every side: each engine (our batched engine, transformers' manager) is built,
started and warmed up (one short run) once per stream count, outside the timing, and a timed call is only
the requests: submit them all, wait until every token arrived. (``model.generate_batch`` would charge
transformers a manager's set-up and tear-down, two ``gc.collect()`` among it, on every call.) Every side
must return exactly ``--new-tokens`` tokens per stream, or the run stops before printing a figure; how many
streams' tokens agree between the sides (all greedy) is printed. Each figure is the best of ``--rounds``
(aggregate generated tokens/s). Then the time to first token of a request that joins a running batch of 8,
against the same request on an idle engine.

    python bench/bench_batching.py [--new-tokens 128] [--rounds 3] [--streams 1,4,8,16] [--model DIR]

``--model DIR`` (e.g. the real SmolLM2-135M-Instruct that tools/real_model.py builds) measures that model
too, after the bundled one, and prints its table and ratios beside the bundled model's.

The last line reads ``batched/serial at 8 streams: <r>x; batched/transformers-CB at 8: <r>x, at 16: <r>x``;
targets: batched at 8 streams >= 3x its own 1-stream rate, and >= 1.0x transformers' CB at 8 and 16.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import threading
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from chatstream.bundled import bundled_model_path
from chatstream.engine.batched_generator import BatchedChatGenerator
from chatstream.engine.chat_prompt import ChatPromptFromTemplate
from chatstream.engine.events import TokenEvent
from chatstream.engine.generation import ChatGenerator, GenerationParams, build_input_ids

QUESTIONS = ["Hello", "こんにちは", "What is your name?", "How is the weather?", "Do you like cats?", "Thanks",
             "Tell me about dogs", "Goodbye"]


def prompts(tokenizer, n: int, params: GenerationParams) -> list[list[int]]:
    out = []
    for i in range(n):
        prompt = ChatPromptFromTemplate(tokenizer)
        prompt.add_requester_msg(QUESTIONS[i % len(QUESTIONS)])
        prompt.add_responder_msg(None)
        out.append(build_input_ids(prompt, tokenizer, params)[0])
    return out


def in_threads(jobs) -> float:
    """Run the callables in threads released together; the wall time until the last one ends."""
    barrier = threading.Barrier(len(jobs) + 1)
    threads = [threading.Thread(target=lambda job=job: (barrier.wait(), job())) for job in jobs]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def _check_made(side: str, tokens: list[list[int]], n: int) -> None:
    """Every stream of ``side`` made exactly ``n`` tokens (EOS is ignored everywhere), or the run stops."""
    made = [len(t) for t in tokens]
    if made != [n] * len(tokens):
        raise AssertionError(f"{side} made {made} tokens per stream, not {n} each")


def batched_rate(generator: BatchedChatGenerator, ids: list[list[int]], params: GenerationParams,
                 n: int) -> tuple[float, list[list[int]]]:
    """Aggregate tokens/s of ``ids`` streamed from the batched engine in threads, and each stream's tokens."""
    tokens: list[list[int]] = [[] for _ in ids]

    def one(i: int) -> None:
        for event in generator.events_from_ids(ids[i], params, n):
            if isinstance(event, TokenEvent):
                tokens[i].append(event.token_id)

    wall = in_threads([lambda i=i: one(i) for i in range(len(ids))])
    _check_made("batched", tokens, n)
    return len(ids) * n / wall, tokens


def serial_rate(generator: ChatGenerator, tokenizer, count: int, params: GenerationParams,
                n: int) -> tuple[float, list[list[int]]]:
    """Aggregate tokens/s of ``count`` per-stream loops in threads, and each stream's tokens."""
    tokens: list[list[int]] = [[] for _ in range(count)]
    params = params.replace(max_new_tokens=n)

    def one(i: int) -> None:
        prompt = ChatPromptFromTemplate(tokenizer)
        prompt.add_requester_msg(QUESTIONS[i % len(QUESTIONS)])
        prompt.add_responder_msg(None)
        for event in generator.events(prompt, params):
            if isinstance(event, TokenEvent):
                tokens[i].append(event.token_id)

    wall = in_threads([lambda i=i: one(i) for i in range(count)])
    _check_made("serial", tokens, n)
    return count * n / wall, tokens


class PersistentCB:
    """transformers' continuous batching through one manager, built and started once (as our engine is);
    ``rate`` times only the requests."""

    def __init__(self, model, count: int, longest_prompt: int, n: int, pad_id: int) -> None:
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        page = 32
        blocks = count * ((longest_prompt + n) // page + 2)
        config = ContinuousBatchingConfig(num_blocks=blocks, page_size=page, max_batch_tokens=256,
                                          max_requests_per_batch=max(count, 1))
        generation = GenerationConfig(max_new_tokens=n, do_sample=False, eos_token_id=-1, pad_token_id=pad_id)
        self.manager = model.init_continuous_batching(generation_config=generation, continuous_batching_config=config)
        self.manager.start()

    def rate(self, ids: list[list[int]], n: int) -> tuple[float, list[list[int]]]:
        """Aggregate tokens/s of ``ids`` submitted together, and each request's tokens."""
        started = time.perf_counter()
        request_ids = self.manager.add_requests(inputs=ids, max_new_tokens=n)
        results = {}
        while len(results) < len(ids):
            result = self.manager.get_result(timeout=120)
            if result is None:
                raise RuntimeError("transformers' CB manager returned no result within 120 s")
            if result.is_finished():
                results[result.request_id] = result
        wall = time.perf_counter() - started
        if any(r.error is not None for r in results.values()):
            raise RuntimeError(f"transformers' CB failed: {[r.error for r in results.values()]}")
        tokens = [list(results[request_id].generated_tokens) for request_id in request_ids]
        _check_made("transformers-CB", tokens, n)
        return len(ids) * n / wall, tokens

    def close(self) -> None:
        self.manager.stop(block=True, timeout=60)
        self.manager.destroy()


def join_ttft(generator: BatchedChatGenerator, ids: list[list[int]], joiner: list[int], params, n: int) -> float:
    """Seconds from submitting ``joiner`` to its first delta while ``ids`` (8 streams) are decoding."""
    running = [iter(generator.stream_ids(i, params, n)) for i in ids]
    for stream in running:
        next(stream)
    drains = [threading.Thread(target=lambda s=s: [None for _ in s]) for s in running]
    for thread in drains:
        thread.start()
    time.sleep(0.05)
    started = time.perf_counter()
    stream = iter(generator.stream_ids(joiner, params, 8))
    next(stream)
    ttft = time.perf_counter() - started
    if ids and not all(thread.is_alive() for thread in drains):
        raise AssertionError("the batch had finished before the joiner's first token: it joined no running batch")
    list(stream)
    for thread in drains:
        thread.join()
    return ttft


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", default="1,4,8,16")
    parser.add_argument("--model", default=None, help="a model directory to measure beside the bundled model")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    for path in [bundled_model_path(), *([args.model] if args.model else [])]:
        bench(args, path)


def bench(args: argparse.Namespace, path) -> None:
    """Every figure for the model at ``path``."""
    n = args.new_tokens
    counts = [int(s) for s in args.streams.split(",")]
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    cb_model = copy.deepcopy(model)
    params = GenerationParams(temperature=0, max_new_tokens=n)
    serial = ChatGenerator(model, tokenizer, "cpu", params)
    serial.eos_ids = set()  # every stream makes exactly n tokens

    rates: dict[str, dict[int, float]] = {"batched": {}, "serial": {}, "transformers-CB": {}}
    print(f"model {path}, CPU, {torch.get_num_threads()} torch thread(s), {n} new tokens per stream, "
          f"best of {args.rounds}; aggregate generated tokens/s")
    print(f"{'streams':>8} {'batched':>10} {'serial':>10} {'transformers-CB':>16} {'same tokens (b=s, b=CB)':>24}")
    for count in counts:
        ids = prompts(tokenizer, count, params)
        batched = BatchedChatGenerator(model, tokenizer, "cpu", params, capacity=count)
        batched.eos_ids = set()
        cb = PersistentCB(cb_model, count, max(map(len, ids)), n, tokenizer.pad_token_id)
        sides = {
            "batched": functools.partial(batched_rate, batched, ids, params),
            "serial": functools.partial(serial_rate, serial, tokenizer, count, params),
            "transformers-CB": functools.partial(cb.rate, ids),
        }  # each: new tokens per stream -> (tokens/s, each stream's tokens)
        for side in sides.values():  # warm every side up alike: one short untimed run
            side(8)
        best = {name: 0.0 for name in sides}
        made: dict[str, list[list[int]]] = {}
        for _ in range(args.rounds):  # alternate, so machine noise hits all three alike
            for name, side in sides.items():
                rate, made[name] = side(n)
                best[name] = max(best[name], rate)
        batched.close()
        cb.close()
        for name, value in best.items():
            rates[name][count] = value
        same_serial = sum(a == b for a, b in zip(made["batched"], made["serial"], strict=True))
        same_cb = sum(a == b for a, b in zip(made["batched"], made["transformers-CB"], strict=True))
        print(f"{count:>8} {best['batched']:>10.0f} {best['serial']:>10.0f} {best['transformers-CB']:>16.0f} "
              f"{f'{same_serial}/{count}, {same_cb}/{count}':>24}")

    if 8 in counts:
        ids = prompts(tokenizer, 9, params)
        engine = BatchedChatGenerator(model, tokenizer, "cpu", params, capacity=9)
        engine.eos_ids = set()
        idle = min(join_ttft(engine, [], ids[8], params, n) for _ in range(args.rounds))
        joined = min(join_ttft(engine, ids[:8], ids[8], params, n) for _ in range(args.rounds))
        engine.close()
        print(f"time to first token: {idle * 1e3:.1f} ms on an idle engine, {joined * 1e3:.1f} ms joining a "
              "running batch of 8")

    b = rates["batched"]
    if 1 in b and 8 in b:
        print(f"batched at 8 streams / batched at 1 stream: {b[8] / b[1]:.2f}x (target >= 3)")
    at8 = f"{b[8] / rates['transformers-CB'][8]:.2f}x" if 8 in b else "n/a"
    at16 = f"{b[16] / rates['transformers-CB'][16]:.2f}x" if 16 in b else "n/a"
    serial8 = f"{b[8] / rates['serial'][8]:.2f}x" if 8 in b else "n/a"
    print(f"batched/serial at 8 streams: {serial8}; batched/transformers-CB at 8: {at8}, at 16: {at16}")


if __name__ == "__main__":
    main()
