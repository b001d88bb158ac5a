"""Decode-loop speed: chatstream's engine against transformers' ``model.generate()``.

Both run greedy decoding on the bundled tiny model from the same prompt for the same number of new
tokens, alternating, so machine noise hits both alike. Prints tokens/s for each and the ratio
(engine / generate; the target is >= 1.0).

    python bench/bench_decode.py [--model PATH] [--new-tokens 128] [--rounds 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from chatstream.bundled import bundled_model_path
from chatstream.engine.chat_prompt import ChatPromptFromTemplate
from chatstream.engine.generation import GenerationParams, build_input_ids, decode_tokens
from chatstream.engine.sampling import SamplingParams
from chatstream.engine.token_sampler import TokenSamplerIsok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    path = args.model or bundled_model_path()
    device = torch.device(args.device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
    prompt = ChatPromptFromTemplate(tokenizer)
    prompt.add_requester_msg("Hello! Please tell me about cats.")
    prompt.add_responder_msg(None)
    ids, _ = build_input_ids(prompt, tokenizer, GenerationParams())
    n = args.new_tokens
    sampler = TokenSamplerIsok()
    greedy = SamplingParams(temperature=0)
    # No EOS on either side, so both produce exactly n tokens; the model's own config would stop generate().
    config = GenerationConfig(max_new_tokens=n, do_sample=False, eos_token_id=None,
                              pad_token_id=tokenizer.pad_token_id or 0)
    model.generation_config = config
    input_tensor = torch.tensor([ids], device=device)

    def run_engine() -> list[int]:
        return list(decode_tokens(model, ids, sampler=sampler, sampling=greedy, max_new_tokens=n,
                                  eos_ids=set(), device=device))

    def run_generate() -> list[int]:
        return model.generate(input_tensor, generation_config=config)[0, len(ids):].tolist()

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        produced = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        assert len(produced) == n, f"expected {n} new tokens, got {len(produced)}"
        return n / elapsed

    # warm-up; both sides decode greedily from the same ids, so they must make the same tokens
    same = sum(a == b for a, b in zip(run_engine(), run_generate(), strict=True))
    print(f"tokens that agree between the two sides: {same}/{n}")
    engine, generate = [], []
    for _ in range(args.rounds):
        engine.append(timed(run_engine))
        generate.append(timed(run_generate))
    e, g = statistics.median(engine), statistics.median(generate)
    print(f"model={path} device={device} prompt_tokens={len(ids)} new_tokens={n} rounds={args.rounds}")
    print(f"chatstream decode loop : {e:8.1f} tokens/s (median)")
    print(f"transformers generate(): {g:8.1f} tokens/s (median)")
    print(f"ratio engine/generate  : {e / g:.2f}x (target >= 1.0x)")


if __name__ == "__main__":
    main()
