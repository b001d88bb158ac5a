"""Compare a recorded cassette with a fresh live recording of the same run (``pytest --probe=verify``).

The sampler calls of the recorded cassette are walked in recorded order; each is matched by
content (history, sampling parameters, seed) with a live one. At each step the logits both saw are
compared with dtype-aware ``rtol``/``atol`` over the positions both cassettes kept, then the tokens.
At the first step where the tokens differ, the run is *within tolerance* when each side's token is
among the other side's top-k (the rule of vLLM's ``check_logprobs_close``), else *diverged* there;
nothing after that step is comparable. A step with no live counterpart, or logits beyond tolerance,
is a divergence too. ``compare_cassettes`` gives the first divergence of the whole run;
``compare_generations`` applies the same step rule to each answer (``chatstream cassette diff``).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import asdict, dataclass

import torch

from . import cassette as fmt
from ._cassette_generations import Generation, generations
from ._cassette_miss import MissExplainer

# (rtol, atol) per dtype the logits were produced or stored in; the looser one applies.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-7),
    "float32": (1e-4, 1e-4),
    "float16": (1e-2, 1e-2),
    "bfloat16": (5e-2, 5e-2),
}
DEFAULT_TOP_K = 5
STATUSES = ("identical", "within_tolerance", "diverged")
# What differs at the first divergent step: the logits only (same token), the tokens, a step the live run
# never took, or steps only the live run took.
DIFFERENCES = ("logits", "token", "missing", "extra")


@dataclass
class VerifyResult:
    """The outcome of ``compare_cassettes``; ``str()`` is a one-line summary."""

    status: str
    steps_compared: int
    first_divergent_step: int | None = None
    recorded_token: int | None = None
    live_token: int | None = None
    recorded_text: str | None = None
    live_text: str | None = None
    max_logit_diff: float | None = None
    rtol: float = 0.0
    atol: float = 0.0
    top_k: int = DEFAULT_TOP_K
    reason: str = ""
    recorded_dir: str = ""
    live_dir: str = ""
    differs: str | None = None  # one of DIFFERENCES at the first divergent step
    worst_token: int | None = None  # where the logits differ most at that step (differs == "logits")
    worst_text: str | None = None
    recorded_logit: float | None = None
    live_logit: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        diff = "n/a" if self.max_logit_diff is None else f"{self.max_logit_diff:.3g}"
        head = f"{self.status}: {self.steps_compared} steps compared, max logit diff {diff}"
        if self.first_divergent_step is None:
            return head
        return f"{head}; step {self.first_divergent_step}: {self.step_summary()}"

    def step_summary(self, sides: tuple[str, str] = ("recorded", "live")) -> str:
        """What happened at the first divergent step, in words; ``sides`` names the two recordings
        (``("A", "B")`` for ``cassette diff``, where neither is live)."""
        first, second = sides
        if self.differs == "logits":
            return (f"both sides chose token {self.recorded_token} ({self.recorded_text!r}) but the logits differ: "
                    f"at token {self.worst_token} ({self.worst_text!r}) {first} {self.recorded_logit:.6g}, "
                    f"{second} {self.live_logit:.6g}; {self.reason}")
        return (f"{first} token {self.recorded_token} ({self.recorded_text!r}), {second} token {self.live_token} "
                f"({self.live_text!r}); {self.reason}")


def default_tolerances(*cassettes: fmt.Cassette) -> tuple[float, float]:
    """The loosest (rtol, atol) over the model dtypes and the storage fidelities of ``cassettes``."""
    names = set()
    for c in cassettes:
        names.add(c.manifest["model"].get("dtype", "float32"))
        if c.fidelity != "exact":
            names.add("float16")
    pairs = [TOLERANCES.get(n, TOLERANCES["float32"]) for n in names] or [TOLERANCES["float32"]]
    return max(p[0] for p in pairs), max(p[1] for p in pairs)


def _sample_logits(cassette: fmt.Cassette) -> dict[int, fmt.StoredLogits]:
    forwards = {f["s"]: f["logits"] for f in cassette.forwards()}
    out = {}
    for s in cassette.samples():
        logits = s.get("logits") or forwards.get(s.get("lf"))
        if logits is not None:
            out[s["s"]] = logits
    return out


def _in_top_k(token: int, logits: torch.Tensor, k: int) -> bool:
    return token in torch.topk(logits.float()[0], min(k, logits.shape[-1])).indices.tolist()


@dataclass
class StepVerdict:
    """One step compared: the largest logit difference, and where the comparison stops (``status``
    "diverged" or "within_tolerance" with ``differs`` set) or goes on (``differs`` None)."""

    status: str
    max_diff: float | None = None
    differs: str | None = None
    reason: str = ""
    worst_token: int | None = None
    recorded_logit: float | None = None
    live_logit: float | None = None


def compare_step(recorded: dict, live: dict, a: fmt.StoredLogits | None, b: fmt.StoredLogits | None,
                 rtol: float, atol: float, top_k: int = DEFAULT_TOP_K) -> StepVerdict:
    """Compare one recorded sampler call with its live counterpart (``a`` / ``b``: the logits each saw)."""
    verdict = StepVerdict("identical")
    full_a = full_b = None
    if a is not None and b is not None:
        full_a, full_b = a.full().float(), b.full().float()
        both = a.known_mask() & b.known_mask() & full_a[0].isfinite() & full_b[0].isfinite()
        if both.any():
            diffs = (full_a[0] - full_b[0]).abs().masked_fill(~both, 0)
            worst = int(diffs.argmax())
            verdict.max_diff = float(diffs[worst])
            if verdict.max_diff != 0:
                verdict.status = "within_tolerance"
            if not torch.allclose(full_a[0][both], full_b[0][both], rtol=rtol, atol=atol):
                verdict.status, verdict.differs = "diverged", "logits" if recorded["tok"] == live["tok"] else "token"
                verdict.worst_token = worst
                verdict.recorded_logit, verdict.live_logit = float(full_a[0, worst]), float(full_b[0, worst])
                verdict.reason = f"logits differ by up to {verdict.max_diff:.3g}, beyond rtol={rtol:g} atol={atol:g}"
                return verdict
    if recorded["tok"] != live["tok"]:
        verdict.differs = "token"
        if full_a is None or full_b is None:
            verdict.status, verdict.reason = "diverged", "the tokens differ and the logits to judge them were not kept"
        elif _in_top_k(recorded["tok"], full_b, top_k) and _in_top_k(live["tok"], full_a, top_k):
            verdict.status = "within_tolerance"
            verdict.reason = f"the tokens differ but each is in the other side's top {top_k}"
        else:
            verdict.status = "diverged"
            verdict.reason = f"the tokens differ and are not both in the other side's top {top_k}"
    return verdict


class _Comparison:
    """The two loaded cassettes, their tolerances and what is needed to judge and describe a step."""

    def __init__(self, recorded_dir: str | os.PathLike, live_dir: str | os.PathLike, rtol: float | None,
                 atol: float | None, top_k: int) -> None:
        self.recorded, self.live = fmt.load_cassette(recorded_dir), fmt.load_cassette(live_dir)
        default_rtol, default_atol = default_tolerances(self.recorded, self.live)
        self.rtol = default_rtol if rtol is None else rtol
        self.atol = default_atol if atol is None else atol
        self.top_k = top_k
        self.explain, self.live_explain = MissExplainer(self.recorded), MissExplainer(self.live)
        self.rec_logits, self.live_logits = _sample_logits(self.recorded), _sample_logits(self.live)

    def new_result(self) -> VerifyResult:
        return VerifyResult("identical", 0, rtol=self.rtol, atol=self.atol, top_k=self.top_k,
                            recorded_dir=str(self.recorded.path), live_dir=str(self.live.path))

    def step(self, recorded: dict, live: dict) -> StepVerdict:
        return compare_step(recorded, live, self.rec_logits.get(recorded["s"]), self.live_logits.get(live["s"]),
                            self.rtol, self.atol, self.top_k)

    def stop(self, result: VerifyResult, step: int, status: str, differs: str, reason: str,
             rec_tok: int | None, live_tok: int | None, verdict: StepVerdict | None = None) -> VerifyResult:
        result.status, result.first_divergent_step, result.reason, result.differs = status, step, reason, differs
        result.recorded_token, result.live_token = rec_tok, live_tok
        result.recorded_text = None if rec_tok is None else self.explain.describe([rec_tok])
        result.live_text = None if live_tok is None else self.live_explain.describe([live_tok])
        if verdict is not None and verdict.worst_token is not None:
            result.worst_token, result.worst_text = verdict.worst_token, self.explain.describe([verdict.worst_token])
            result.recorded_logit, result.live_logit = verdict.recorded_logit, verdict.live_logit
        return result

    def apply(self, result: VerifyResult, step: int, recorded: dict, live: dict) -> bool:
        """Fold one step into ``result``; True when the comparison stops at it."""
        verdict = self.step(recorded, live)
        result.steps_compared = step + 1
        if verdict.max_diff is not None:
            result.max_logit_diff = max(result.max_logit_diff or 0.0, verdict.max_diff)
        if verdict.status == "within_tolerance":
            result.status = "within_tolerance"
        if verdict.differs is None:
            return False
        self.stop(result, step, verdict.status, verdict.differs, verdict.reason, recorded["tok"], live["tok"],
                  verdict)
        return True


_NEVER_SAMPLED = ("the live run never sampled after this history (its prompt or an earlier step differed, or it "
                  "stopped early)")


def compare_cassettes(recorded_dir: str | os.PathLike, live_dir: str | os.PathLike, rtol: float | None = None,
                      atol: float | None = None, top_k: int = DEFAULT_TOP_K) -> VerifyResult:
    """Classify ``live_dir`` against ``recorded_dir`` as identical, within tolerance or diverged."""
    comparison = _Comparison(recorded_dir, live_dir, rtol, atol, top_k)
    live_by_key: dict[str, list[dict]] = defaultdict(list)
    for s in comparison.live.samples():
        live_by_key[fmt.sample_key(s["h"], s["params"], s["seed"])].append(s)
    used: dict[str, int] = defaultdict(int)
    result = comparison.new_result()
    for step, rec in enumerate(comparison.recorded.samples()):
        key = fmt.sample_key(rec["h"], rec["params"], rec["seed"])
        candidates = live_by_key.get(key, [])
        if used[key] >= len(candidates):
            return comparison.stop(result, step, "diverged", "missing", _NEVER_SAMPLED, rec["tok"], None)
        other = candidates[used[key]]
        used[key] += 1
        if comparison.apply(result, step, rec, other):
            return result
    extra = sum(len(v) - used[k] for k, v in live_by_key.items() if len(v) > used[k])
    if extra:
        return comparison.stop(result, result.steps_compared, "diverged", "extra",
                               f"the live run sampled {extra} more token(s) than the recording", None, None)
    return result


@dataclass
class GenerationComparison:
    """One answer of ``a`` against the same answer (same prompt, parameters, seed) in ``b``; ``index`` counts
    the answers of the side that holds it (``side``: "both", "a" or "b" only)."""

    index: int
    prompt_text: str | None
    result: VerifyResult
    side: str = "both"

    def to_dict(self) -> dict:
        return {"index": self.index, "side": self.side, "prompt_text": self.prompt_text, **self.result.to_dict()}


def compare_generations(a_dir: str | os.PathLike, b_dir: str | os.PathLike, rtol: float | None = None,
                        atol: float | None = None, top_k: int = DEFAULT_TOP_K) -> list[GenerationComparison]:
    """Each answer of ``a_dir`` compared step by step with its counterpart in ``b_dir`` (same step rule as
    ``compare_cassettes``), then each answer only ``b_dir`` holds, as "diverged" at step 0."""
    comparison = _Comparison(a_dir, b_dir, rtol, atol, top_k)
    theirs: dict[str, list[Generation]] = defaultdict(list)
    for generation in generations(comparison.live):
        theirs[generation.key].append(generation)
    out = []
    for mine in generations(comparison.recorded, comparison.explain):
        prompt = None if mine.prompt_ids is None else comparison.explain.describe(mine.prompt_ids)
        result = comparison.new_result()
        queue = theirs.get(mine.key)
        other = queue.pop(0) if queue else None
        out.append(GenerationComparison(mine.index, prompt, result, "both" if other is not None else "a"))
        if other is None:
            comparison.stop(result, 0, "diverged", "missing", "the other recording holds no answer to this prompt "
                            "with these parameters and seed", mine.samples[0]["tok"], None)
            continue
        for step, (rec, live) in enumerate(zip(mine.samples, other.samples, strict=False)):
            if comparison.apply(result, step, rec, live):
                break
        else:
            if len(mine.samples) != len(other.samples):
                step = min(len(mine.samples), len(other.samples))
                if len(mine.samples) > len(other.samples):
                    comparison.stop(result, step, "diverged", "missing", "the first recording's answer goes on "
                                    "after the second's ended", mine.samples[step]["tok"], None)
                else:
                    comparison.stop(result, step, "diverged", "extra", "the second recording's answer goes on "
                                    "after the first's ended", None, other.samples[step]["tok"])
    for queue in theirs.values():
        for other in queue:
            result = comparison.new_result()
            comparison.stop(result, 0, "diverged", "extra", "only the second recording holds this answer",
                            None, other.samples[0]["tok"])
            prompt = None if other.prompt_ids is None else comparison.live_explain.describe(other.prompt_ids)
            out.append(GenerationComparison(other.index, prompt, result, "b"))
    return out
