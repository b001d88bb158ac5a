"""Decode-loop speed: chatstream's engine against transformers' ``model.generate()``.

Both run greedy decoding on the bundled tiny model from the same prompt for the same number of new
tokens, alternating, so machine noise hits both alike. Prints tokens/s for each and the ratio
(engine / generate; the target is >= 1.0). With ``--model DIR`` (e.g. the real SmolLM2-135M-Instruct that
tools/real_model.py builds) that model is measured too, and its figures printed beside the bundled model's.

    python bench/bench_decode.py [--model DIR] [--dtype auto] [--new-tokens 128] [--rounds 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import GenerationConfig

from chatstream.bundled import bundled_model_path
from chatstream.engine.chat_prompt import ChatPromptFromTemplate
from chatstream.engine.generation import GenerationParams, build_input_ids, decode_tokens
from chatstream.engine.model_loading import DTYPES, load_model
from chatstream.engine.sampling import SamplingParams
from chatstream.engine.token_sampler import TokenSamplerIsok


def measure(path, device: torch.device, dtype: str, n: int, rounds: int) -> tuple[float, float, int]:
    """Median tokens/s of the engine's decode loop and of generate(), and the prompt's length, for one model."""
    model, tokenizer = load_model(path, device, dtype, progress=False)
    prompt = ChatPromptFromTemplate(tokenizer)
    prompt.add_requester_msg("Hello! Please tell me about cats.")
    prompt.add_responder_msg(None)
    ids, _ = build_input_ids(prompt, tokenizer, GenerationParams())
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
    for _ in range(rounds):
        engine.append(timed(run_engine))
        generate.append(timed(run_generate))
    return statistics.median(engine), statistics.median(generate), len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a model directory to measure beside the bundled model")
    parser.add_argument("--dtype", default="auto", choices=tuple(DTYPES))
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    paths = [bundled_model_path(), *([args.model] if args.model else [])]
    print(f"device={device} dtype={args.dtype} new_tokens={args.new_tokens} rounds={args.rounds} "
          f"torch threads={torch.get_num_threads()}")
    print(f"{'model':<40} {'prompt':>6} {'engine tok/s':>13} {'generate() tok/s':>17} {'engine/generate':>16}")
    for path in paths:
        e, g, prompt_tokens = measure(path, device, args.dtype, args.new_tokens, args.rounds)
        print(f"{str(path)[-40:]:<40} {prompt_tokens:>6} {e:>13.1f} {g:>17.1f} {e / g:>15.2f}x")
    print("target: engine/generate >= 1.0x")


if __name__ == "__main__":
    main()
