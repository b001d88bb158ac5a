"""Continuous batching throughput: the batched engine, the per-stream loop and transformers' continuous batching.

At 1, 4, 8 and 16 concurrent streams, each greedy with 128 new tokens (EOS ignored, so each makes
exactly 128), on the bundled tiny model on CPU, it times:
- batched: ``BatchedChatGenerator`` (one scheduler thread, one forward per step for all streams),
  the streams read from N threads as ChatStream's workers do;
- serial: today's per-stream loop, ``ChatGenerator.stream`` in N threads;
- transformers-CB: ``model.generate_batch`` (transformers' continuous batching, paged attention), given a
  paged cache sized for the run (its default sizes the cache from free memory, which on CPU takes
  tens of seconds per call), on its own copy of the model since it switches the attention implementation.
Each figure is the best of ``--rounds`` (aggregate generated tokens/s). Then the time to first token of
a request that joins a running batch of 8, against the same request on an idle engine.

    python bench/bench_batching.py [--new-tokens 128] [--rounds 3] [--streams 1,4,8,16] [--model DIR]

``--model DIR`` (e.g. the real SmolLM2-135M-Instruct that tools/real_model.py builds) measures that model
too, after the bundled one, and prints its table and ratios beside the bundled model's.

The last line reads ``batched/serial at 8 streams: <r>x; batched/transformers-CB at 8: <r>x, at 16: <r>x``;
targets: batched at 8 streams >= 3x its own 1-stream rate, and >= 1.0x transformers' CB at 8 and 16.
"""

from __future__ import annotations

import argparse
import copy
import os
import threading
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from chatstream.bundled import bundled_model_path
from chatstream.engine.batched_generator import BatchedChatGenerator
from chatstream.engine.chat_prompt import ChatPromptFromTemplate
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


def batched_rate(generator: BatchedChatGenerator, ids: list[list[int]], params: GenerationParams, n: int) -> float:
    counts = [0] * len(ids)

    def one(i: int) -> None:
        for _ in generator.stream_ids(ids[i], params, n):
            counts[i] += 1

    wall = in_threads([lambda i=i: one(i) for i in range(len(ids))])
    return len(ids) * n / wall


def serial_rate(generator: ChatGenerator, tokenizer, ids: list[list[int]], params: GenerationParams, n: int) -> float:
    def one(i: int) -> None:
        prompt = ChatPromptFromTemplate(tokenizer)
        prompt.add_requester_msg(QUESTIONS[i % len(QUESTIONS)])
        prompt.add_responder_msg(None)
        for _ in generator.stream(prompt, params):
            pass

    wall = in_threads([lambda i=i: one(i) for i in range(len(ids))])
    return len(ids) * n / wall


def cb_rate(model, ids: list[list[int]], n: int, pad_id: int) -> float:
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    page = 32
    blocks = len(ids) * ((max(map(len, ids)) + n) // page + 2)
    config = ContinuousBatchingConfig(num_blocks=blocks, page_size=page, max_batch_tokens=256,
                                      max_requests_per_batch=max(len(ids), 1))
    generation = GenerationConfig(max_new_tokens=n, do_sample=False, eos_token_id=-1, pad_token_id=pad_id)
    started = time.perf_counter()
    out = model.generate_batch(inputs=ids, generation_config=generation, continuous_batching_config=config,
                               progress_bar=False, warmup=False)
    wall = time.perf_counter() - started
    made = sum(len(o.generated_tokens) for o in out.values())
    assert made == len(ids) * n, f"transformers CB made {made} tokens, not {len(ids) * n}"
    return made / wall


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
    print(f"{'streams':>8} {'batched':>10} {'serial':>10} {'transformers-CB':>16}")
    for count in counts:
        ids = prompts(tokenizer, count, params)
        batched = BatchedChatGenerator(model, tokenizer, "cpu", params, capacity=count)
        batched.eos_ids = set()
        batched_rate(batched, ids, params, 8)  # warm the scheduler thread
        best = {"batched": 0.0, "serial": 0.0, "transformers-CB": 0.0}
        for _ in range(args.rounds):  # alternate, so machine noise hits all three alike
            best["batched"] = max(best["batched"], batched_rate(batched, ids, params, n))
            best["serial"] = max(best["serial"], serial_rate(serial, tokenizer, ids, params, n))
            best["transformers-CB"] = max(best["transformers-CB"], cb_rate(cb_model, ids, n, tokenizer.pad_token_id))
        batched.close()
        for name, value in best.items():
            rates[name][count] = value
        print(f"{count:>8} {best['batched']:>10.0f} {best['serial']:>10.0f} {best['transformers-CB']:>16.0f}")

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
