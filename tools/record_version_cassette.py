"""Record the cassette that shows replay across transformers versions.

    python tools/record_version_cassette.py     # -> fixtures/version-cassettes/transformers-<installed version>

Run it once under each transformers version whose cassettes must replay everywhere (5.23: the last
with `past_key_values`; 5.24: the first with `cache`); tests/test_cassette_versions.py replays every
directory there under whatever version is installed. The conversations are the ones that test asserts.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatstream import ChatGenerator, ChatPromptFromTemplate, GenerationParams, ProbeRecorder
from chatstream.bundled import bundled_model_path

CONVERSATIONS = (
    ("Hello", GenerationParams(temperature=0, max_new_tokens=16)),
    ("こんにちは", GenerationParams(temperature=0.8, top_k=40, top_p=0.95, seed=11, max_new_tokens=16)),
)


def answer(model, tokenizer, sampler, text: str, params: GenerationParams) -> str:
    prompt = ChatPromptFromTemplate(tokenizer)
    prompt.add_requester_msg(text)
    prompt.add_responder_msg(None)
    return ChatGenerator(model, tokenizer, "cpu", params, token_sampler=sampler).generate_text(prompt)


def main() -> None:
    root = Path(__file__).resolve().parent.parent / "fixtures" / "version-cassettes"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=root / f"transformers-{transformers.__version__}")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    path = bundled_model_path()
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    with ProbeRecorder(args.out) as recorder:
        wrapped = recorder.wrap(model, tokenizer)
        for text, params in CONVERSATIONS:
            print(repr(text), "->", repr(answer(*wrapped, text, params)))
    print(f"recorded {args.out}")


if __name__ == "__main__":
    main()
