"""Detokenisation cost is linear in the response length.

Times ``StreamingDetokenizer`` over 256 and over 2048 tokens of mixed English/Japanese/emoji text
with the bundled tokenizer; linear cost gives a ratio near 8, a full re-decode per token about 64.
The target is a ratio of at most 10. A naive re-decode is timed too, as a reference.

    python bench/bench_detokenize.py [--model PATH] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

from transformers import AutoTokenizer

from chatstream.bundled import bundled_model_path
from chatstream.engine.detokenizer import StreamingDetokenizer

TEXT = "Hello! How can I help you today? こんにちは！今日はどんなご用ですか？ 猫が好きです 🐱🎉 "


def streaming(tokenizer, ids: list[int]) -> str:
    detok = StreamingDetokenizer(tokenizer, stop_strs=["<|im_end|>"])
    return "".join(detok.push(i) for i in ids) + detok.finish()


def naive(tokenizer, ids: list[int]) -> str:
    text = ""
    for end in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:end], skip_special_tokens=True)
    return text


def best_time(fn, tokenizer, ids: list[int], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(tokenizer, ids)
        times.append(time.perf_counter() - start)
    return min(times)  # the least disturbed run; this machine is shared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model or bundled_model_path())
    all_ids = tokenizer.encode(TEXT * 400, add_special_tokens=False)
    short, long = all_ids[:256], all_ids[:2048]
    assert len(long) == 2048, "corpus too short"
    # the 2048-token cut may end inside a character, which the stream rightly holds back
    assert streaming(tokenizer, long) == tokenizer.decode(long).rstrip("\ufffd")

    t_short = best_time(streaming, tokenizer, short, args.repeats)
    t_long = best_time(streaming, tokenizer, long, args.repeats)
    n_short = best_time(naive, tokenizer, short, max(1, args.repeats // 2))
    n_long = best_time(naive, tokenizer, long, 1)
    print(f"streaming detokenizer: 256 tokens {t_short * 1e3:7.1f} ms, 2048 tokens {t_long * 1e3:7.1f} ms, "
          f"ratio {t_long / t_short:.1f} (target <= 10)")
    print(f"naive full re-decode : 256 tokens {n_short * 1e3:7.1f} ms, 2048 tokens {n_long * 1e3:7.1f} ms, "
          f"ratio {n_long / n_short:.1f}")


if __name__ == "__main__":
    main()
