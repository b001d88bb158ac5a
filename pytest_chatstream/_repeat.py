"""``--probe=repeat:N``: how many distinct token sequences N live runs of one test produced, and where they part.

Each run of a test is recorded into a throwaway directory; its token sequence is the tokens of every
answer it generated, answer by answer in the order they began. Runs that agree token for token count
as one sequence. The first step where they part is counted over the concatenated answers, as verify
counts steps, and also given as (answer, step within it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._report import Report

Run = list[list[int]]  # one run: the token ids of each answer


def recorded_run(directory: Path, tokenizer: Any = None) -> tuple[Run, Callable[[int], str | None]]:
    """The answers recorded in ``directory`` (a cassette), and a function that decodes one token id.

    A token's text comes from the recorded tokenizer calls; where they do not hold it (the decoded
    text the runtime asked for covered it only together with its neighbours), from ``tokenizer``, the
    live one, when given.
    """
    from chatstream.cassettes import cassette as fmt
    from chatstream.cassettes._cassette_generations import generations
    from chatstream.cassettes._cassette_miss import MissExplainer

    cassette = fmt.load_cassette(directory)
    explain = MissExplainer(cassette)

    def describe(token: int) -> str:
        text = explain.describe([token])
        if text == f"⟨{token}⟩" and tokenizer is not None:
            return tokenizer.decode([token])
        return text

    return [g.tokens for g in generations(cassette, explain)], describe


def measure(runs: list[Run], describe: Callable[[int], str | None] | None = None) -> dict:
    """The flakiness of ``runs`` (at least one): how many distinct sequences, how often each, where they part.

    ``parting`` lists, at the first step where the runs differ, each token seen there (None: that run's
    answers had ended) with the number of runs that chose it, most frequent first.
    """
    if not runs:
        raise ValueError("`runs` (=[]) must hold at least one run to measure")
    keys = [tuple(tuple(answer) for answer in run) for run in runs]
    counts = Counter(keys)
    result: dict = {
        "runs": len(runs), "distinct": len(counts), "sequence_counts": sorted(counts.values(), reverse=True),
        "tokens_per_run": [sum(len(answer) for answer in run) for run in runs],
        "first_parting_step": None, "answer": None, "answer_step": None, "parting": [],
    }
    if len(counts) == 1:
        return result
    flat = [[(a, s, tok) for a, answer in enumerate(run) for s, tok in enumerate(answer)] for run in runs]
    step = 0
    while len({f[step][2] if step < len(f) else None for f in flat}) == 1:
        step += 1  # ends: the runs differ somewhere (they would be one sequence otherwise)
    # the answer boundaries may differ too; the position is given as the longest run sees it
    where = max(flat, key=len)[step] if any(step < len(f) for f in flat) else (None, None, None)
    seen = Counter(f[step][2] if step < len(f) else None for f in flat)
    result.update(first_parting_step=step, answer=where[0], answer_step=where[1], parting=[
        {"token": token, "text": describe(token) if describe and token is not None else None, "runs": n}
        for token, n in sorted(seen.items(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or 0))
    ])
    return result


def too_many_message(test: str, result: dict, limit: int) -> str:
    """The failure of a test whose runs produced more than ``limit`` distinct token sequences."""
    return (
        f"{test}: {result['runs']} live runs produced {result['distinct']} distinct token sequences (at most "
        f"{limit} allowed by --probe-repeat-max-distinct / chatstream_repeat_max_distinct); they first part at "
        f"{parting_summary(result)}. A cassette recorded from this model and device replays one of them."
    )


def parting_summary(result: dict) -> str:
    """Where the runs part, in words: the step and the tokens chosen there."""
    if result["first_parting_step"] is None:
        return "no step (every run agreed)"
    tokens = ", ".join(
        "end of answers" if p["token"] is None else f"{p['token']} {p['text']!r}" if p["text"] is not None
        else str(p["token"])
        for p in result["parting"]
    )
    counts = "/".join(str(p["runs"]) for p in result["parting"])
    return (f"step {result['first_parting_step']} (answer {result['answer']}, step {result['answer_step']}): "
            f"{tokens} in {counts} runs")


def add_run(runs: list[Run], run: Run, describe: Callable[[int], str | None], repeats: int, test: str,
            limit: int | None) -> tuple[dict | None, str | None]:
    """Keep one run of ``test``; after its last (the ``repeats``-th), measure them all.

    Returns ``(result, failure)``: the measurement (None before the last run) and, when the runs produced more
    than ``limit`` distinct token sequences, the test's failure message.
    """
    runs.append(run)
    if len(runs) < repeats:
        return None, None
    result = measure(runs, describe)
    result["test"] = test
    if limit is not None and result["distinct"] > limit:
        return result, too_many_message(test, result, limit)
    return result, None


def add_live_run(runs: list[Run], run: Any, report: Report, test: str, repeats: int,
                 limit: int | None) -> str | None:
    """Keep what ``run`` (a ``CassetteRun``: one live run of ``test``) generated; after the last run, note the
    measurement in ``report``. Returns the test's failure message when the runs made too many sequences."""
    tokens, describe = run.recorded_run()
    result, failure = add_run(runs, tokens, describe, repeats, test, limit)
    if result is not None:
        report.repeated[test] = result
    return failure


def repeated_reports(run_once: Callable[[bool], Sequence[Any]], repeats: int) -> Sequence[Any]:
    """Run a test's whole protocol up to ``repeats`` times (``run_once(last)`` returns one run's reports) and
    stop at its first failing run: the reports to log, those of a failing run before the last marked with it.
    """
    number, reports = 0, ()
    for number in range(1, repeats + 1):
        reports = run_once(number == repeats)
        if number == repeats or any(report.failed for report in reports):
            break
    if repeats > 1 and number < repeats:
        for report in reports:
            report.sections.append(("chatstream repeat", f"run {number} of {repeats} failed"))
    return reports
