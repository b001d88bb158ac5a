"""The prefix cache's effect on the engine alone: CPU per generated token, cache on and off, in this process.

``bench_multiturn.py`` measures the cache end to end (HTTP, sessions in SQLite, the driver, the clients): on the
bundled tiny model the engine is a small part of that, so its 8-session figure reads 1.00x whatever the cache
does. This bench takes the rest away. It builds what ``chatstream serve --temperature 0 --max-new-tokens 48
--concurrency 8`` builds (the batched engine, the server's prompt preset), twice: with the cache at its default
budget and with ``--prefix-cache-mb 0``. Each round runs 8 concurrent sessions (threads) of 3 turns with
``bench_multiturn``'s questions (each round its own sessions; only the system prompt is shared) on one then the
other, the order alternating, and compares the CPU seconds this process spent per generated token. Both sides
must generate the same tokens and texts (asserted: greedy, the same prompts), so each round compares the same work.

The last line: ``engine CPU per token, cache off / on: <r>x`` (above 1: the cache saves CPU), the median of
per-round ratios, with the mean, its 95% interval and the rounds a +-2% figure needs (``bench_multiturn.spread``).

    OMP_NUM_THREADS=1 python bench/bench_prefix_engine.py [--model DIR] [--rounds 20]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from bench_multiturn import MAX_NEW_TOKENS, questions, spread, throughput_names

SESSIONS, TURNS = 8, 3


def build(model: str | None, cache_mb: float | None):
    """The ChatStream ``chatstream serve`` builds with these options (the model loaded once per side)."""
    from chatstream.serving.cli import build_chat_stream, parse_serve_args

    argv = ["--temperature", "0", "--max-new-tokens", str(MAX_NEW_TOKENS), "--concurrency", str(SESSIONS)]
    argv += ["--model", model] if model else []
    argv += ["--prefix-cache-mb", str(cache_mb)] if cache_mb is not None else []
    args, path = parse_serve_args(argv)
    return build_chat_stream(args, path)


def session(chat_stream, name: str, texts: dict[str, list[str]], tokens: dict[str, int]) -> None:
    """One conversation of TURNS turns on ``chat_stream``'s generator, as the 0.3 endpoint runs it."""
    generator, prompt = chat_stream.chat_generator, chat_stream.new_chat_prompt()
    answers, count = [], 0
    for question in questions(name)[:TURNS]:
        prompt.add_requester_msg(question)
        prompt.add_responder_msg(None)
        text = ""
        for event in generator.events(prompt, chat_stream.generation_params):
            text += event.text
            count += getattr(event, "completion_tokens", 0)
        prompt.set_responder_last_msg(text)
        answers.append(text)
    texts[name], tokens[name] = answers, count


def one_round(chat_stream, names: list[str]) -> tuple[float, int, dict[str, list[str]]]:
    """(CPU seconds of this process, generated tokens, the answers) for one session per name, all at once."""
    texts: dict[str, list[str]] = {}
    tokens: dict[str, int] = {}
    threads = [threading.Thread(target=session, args=(chat_stream, name, texts, tokens)) for name in names]
    started = time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.process_time() - started, sum(tokens.values()), texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="local HF model directory (default: the bundled tiny model)")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    from chatstream.serving import startup_heap

    servers = {"on": build(args.model, None), "off": build(args.model, 0)}
    startup_heap.hold()  # as a serving ChatStream's start does: no full collection walks the model's heap
    for label, chat_stream in servers.items():  # warm-up: the system prompt cached, as on a server that answered
        one_round(chat_stream, [f"warm{label}"])
    ratios, per_token = [], {"on": [], "off": []}
    for r in range(args.rounds):
        names = throughput_names(r)
        results = {}
        for label in (("on", "off") if r % 2 == 0 else ("off", "on")):
            results[label] = one_round(servers[label], names)
        (cpu_on, tokens_on, texts_on), (cpu_off, tokens_off, texts_off) = results["on"], results["off"]
        assert (tokens_on, texts_on) == (tokens_off, texts_off), "cache on and off generated different answers"
        per_token["on"].append(cpu_on / tokens_on)
        per_token["off"].append(cpu_off / tokens_off)
        ratios.append(per_token["off"][-1] / per_token["on"][-1])
    print(f"model: {args.model or 'bundled tiny-chat'}; {args.rounds} rounds of {SESSIONS} sessions x {TURNS} turns "
          f"({results['on'][1]} generated tokens in the last, the same answers on both sides in every round)")
    for label in ("on", "off"):
        print(f"cache {label:3s}: engine CPU per token (ms), per round: "
              f"{' '.join(f'{1000 * value:.2f}' for value in per_token[label])}")
    print(f"engine CPU per token, cache off / on: {statistics.median(ratios):.3f}x (per round: "
          f"{' '.join(f'{r:.2f}' for r in sorted(ratios))}; {spread(ratios)})")


if __name__ == "__main__":
    main()
