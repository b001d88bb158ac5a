"""Cassette bytes per generated token at each fidelity, for a 32k and a 128k vocabulary.

A random 2-layer Llama (hidden 32) with a character-level tokenizer covering every id generates
``--new-tokens`` tokens (EOS disabled) from one chat prompt while a ProbeRecorder records it. The
segment bytes (tensors + JSON, the manifest left out: it is written once per cassette) are divided by
the tokens generated. The target for "compact" is < 1024 bytes per token at any vocabulary size.

    python bench/bench_cassette_size.py [--new-tokens 128] [--vocab 32000 128000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from chatstream.cassettes.cassette import FIDELITIES, MANIFEST_NAME
from chatstream.cassettes.recording import ProbeRecorder
from chatstream.engine.chat_prompt import ChatPromptFromTemplate
from chatstream.engine.generation import ChatGenerator, GenerationParams

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _probe_support import random_model  # the tests' random Llama + character-level tokenizer


def bytes_per_token(model, tokenizer, fidelity: str, new_tokens: int, directory: Path) -> tuple[float, int]:
    params = GenerationParams(max_new_tokens=new_tokens, temperature=1.0, top_k=None, seed=0)
    with ProbeRecorder(directory, fidelity=fidelity) as recorder:
        m, t, s = recorder.wrap(model, tokenizer, None)
        generator = ChatGenerator(m, t, "cpu", params, s)
        generator.eos_ids = set()  # exactly new_tokens tokens
        prompt = ChatPromptFromTemplate(t)
        prompt.add_requester_msg("Hello there! Please tell me a long story about cats.")
        prompt.add_responder_msg(None)
        "".join(generator.stream(prompt))
    segments = sum(p.stat().st_size for p in directory.iterdir() if p.name != MANIFEST_NAME)
    return segments / new_tokens, (directory / MANIFEST_NAME).stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--vocab", type=int, nargs="+", default=[32_000, 128_000])
    args = parser.parse_args()
    print(f"new_tokens={args.new_tokens}; bytes per generated token (segments only; manifest once per cassette)")
    print(f"{'vocab':>8} {'fidelity':>8} {'bytes/token':>12} {'manifest':>9}")
    with tempfile.TemporaryDirectory() as parent:
        for vocab in args.vocab:
            model, tokenizer = random_model(vocab)
            for fidelity in FIDELITIES:
                per_token, manifest = bytes_per_token(model, tokenizer, fidelity, args.new_tokens,
                                                      Path(parent, f"{vocab}-{fidelity}"))
                print(f"{vocab:>8} {fidelity:>8} {per_token:>12.1f} {manifest:>9}")


if __name__ == "__main__":
    main()
