"""Constrained decoding cost: tokens/s with a JSON-schema constraint against the same decoding without it.

On the real chat model (``--model DIR``, default ``$CHATSTREAM_REAL_MODEL`` or
``~/.cache/chatstream/smollm2-135m-instruct``), the batched engine runs 1 and 8 concurrent greedy streams of
``--new-tokens`` each, unconstrained and constrained by a schema (a list of at least 1000 nested objects
with enums, so no answer can complete it within the run). Every EOS id gets logit_bias -100 on both sides,
so both make exactly the same number of tokens (asserted). It reports the best of ``--rounds`` aggregate
tokens/s per side, and the first-request compile time (the tokenizer's vocabulary for the grammar
library, once per tokenizer, then the schema). OMP_NUM_THREADS defaults to 1.

    python bench/bench_structured.py [--model DIR] [--new-tokens 64] [--rounds 2]

The last line reads ``constrained/unconstrained at 8 streams: <r>x`` (target >= 0.8x).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from transformers import AutoModelForCausalLM, AutoTokenizer

from chatstream.engine.batched_generator import BatchedChatGenerator
from chatstream.engine.chat_prompt import ChatPromptFromTemplate
from chatstream.engine.constraints import Constraint, ConstraintCompiler
from chatstream.engine.events import TokenEvent
from chatstream.engine.generation import GenerationParams, build_input_ids

SCHEMA = {"type": "object", "properties": {"records": {"type": "array", "minItems": 1000, "items": {
    "type": "object", "properties": {
        "name": {"type": "string", "maxLength": 24},
        "score": {"type": "integer", "minimum": 0, "maximum": 100},
        "kind": {"enum": ["person", "place", "thing"]},
        "tags": {"type": "array", "maxItems": 3, "items": {"enum": ["red", "green", "blue"]}}},
    "required": ["name", "score", "kind", "tags"], "additionalProperties": False}}},
    "required": ["records"], "additionalProperties": False}
QUESTION = "List people, places and things as JSON records with a name, a score, a kind and tags."


def run(generator: BatchedChatGenerator, ids: list[int], params: GenerationParams, streams: int) -> float:
    """Aggregate tokens/s of ``streams`` concurrent streams; each must make exactly max_new_tokens tokens."""
    counts = [0] * streams

    def one(i: int) -> None:
        counts[i] = sum(isinstance(e, TokenEvent) for e in generator.events_from_ids(ids, params))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    assert counts == [params.max_new_tokens] * streams, f"token counts differ: {counts}"
    return sum(counts) / elapsed


def main() -> None:
    default = os.environ.get("CHATSTREAM_REAL_MODEL", "~/.cache/chatstream/smollm2-135m-instruct")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=default, help="the real model's directory")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    path = Path(args.model).expanduser()
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    print(f"model {path.name}, {args.new_tokens} new tokens per stream, greedy, best of {args.rounds}, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")

    constraint = Constraint.json_schema(SCHEMA)
    compiler = ConstraintCompiler(tokenizer)
    start = time.perf_counter()
    compiler._ll()
    vocabulary = time.perf_counter() - start
    start = time.perf_counter()
    compiler.compile(constraint)
    compile_time = time.perf_counter() - start
    start = time.perf_counter()
    compiler.compile(constraint)
    cached = time.perf_counter() - start
    print(f"first-request compile: vocabulary {vocabulary * 1000:.0f} ms (once per tokenizer), schema "
          f"{compile_time * 1000:.1f} ms; same schema again {cached * 1000:.3f} ms (cached)")

    generator = BatchedChatGenerator(model, tokenizer, "cpu", capacity=8)
    generator.__dict__["_constraint_compiler"] = compiler  # its compile was timed above
    prompt = ChatPromptFromTemplate(tokenizer)
    prompt.add_requester_msg(QUESTION)
    prompt.add_responder_msg(None)
    base = GenerationParams(max_new_tokens=args.new_tokens, context_len=2048, temperature=0,
                            logit_bias={str(i): -100 for i in generator.eos_ids})
    ids, _ = build_input_ids(prompt, tokenizer, base)
    sides = {"unconstrained": base, "constrained": base.replace(constraint=constraint)}
    run(generator, ids, base, 1)  # warm-up
    ratio = {}
    try:
        for streams in (1, 8):
            rates = {name: 0.0 for name in sides}
            for _ in range(args.rounds):
                for name, params in sides.items():
                    rates[name] = max(rates[name], run(generator, ids, params, streams))
            ratio[streams] = rates["constrained"] / rates["unconstrained"]
            print(f"{streams} stream(s): unconstrained {rates['unconstrained']:.1f} tok/s, constrained "
                  f"{rates['constrained']:.1f} tok/s, ratio {ratio[streams]:.2f}x")
    finally:
        generator.close()
    print(f"constrained/unconstrained at 8 streams: {ratio[8]:.2f}x")


if __name__ == "__main__":
    main()
