"""Compare a recorded cassette with a fresh live recording of the same run (``pytest --probe=verify``).

The sampler calls of the recorded cassette are walked in recorded order; each is matched by
content (history, sampling parameters, seed) with a live one. At each step the logits both saw are
compared with dtype-aware ``rtol``/``atol`` over the positions both cassettes kept, then the tokens.
At the first step where the tokens differ, the run is *within tolerance* when each side's token is
among the other side's top-k (the rule of vLLM's ``check_logprobs_close``), else *diverged* there;
nothing after that step is comparable. A step with no live counterpart, or logits beyond tolerance,
is a divergence too.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import asdict, dataclass

import torch

from . import cassette as fmt
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

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        diff = "n/a" if self.max_logit_diff is None else f"{self.max_logit_diff:.3g}"
        head = f"{self.status}: {self.steps_compared} steps compared, max logit diff {diff}"
        if self.first_divergent_step is None:
            return head
        return (f"{head}; step {self.first_divergent_step}: recorded token {self.recorded_token} "
                f"({self.recorded_text!r}), live token {self.live_token} ({self.live_text!r}); {self.reason}")


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


def compare_cassettes(recorded_dir: str | os.PathLike, live_dir: str | os.PathLike, rtol: float | None = None,
                      atol: float | None = None, top_k: int = DEFAULT_TOP_K) -> VerifyResult:
    """Classify ``live_dir`` against ``recorded_dir`` as identical, within tolerance or diverged."""
    recorded, live = fmt.load_cassette(recorded_dir), fmt.load_cassette(live_dir)
    default_rtol, default_atol = default_tolerances(recorded, live)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    explain = MissExplainer(recorded)
    rec_logits, live_logits = _sample_logits(recorded), _sample_logits(live)
    live_by_key: dict[str, list[dict]] = defaultdict(list)
    for s in live.samples():
        live_by_key[fmt.sample_key(s["h"], s["params"], s["seed"])].append(s)
    used: dict[str, int] = defaultdict(int)
    result = VerifyResult("identical", 0, rtol=rtol, atol=atol, top_k=top_k,
                          recorded_dir=str(recorded_dir), live_dir=str(live_dir))
    max_diff: float | None = None

    def diverge(step: int, status: str, reason: str, rec_tok: int | None, live_tok: int | None) -> VerifyResult:
        result.status, result.first_divergent_step, result.reason = status, step, reason
        result.recorded_token, result.live_token = rec_tok, live_tok
        result.recorded_text = None if rec_tok is None else explain.describe([rec_tok])
        result.live_text = None if live_tok is None else explain.describe([live_tok])
        result.max_logit_diff = max_diff
        return result

    for step, rec in enumerate(recorded.samples()):
        key = fmt.sample_key(rec["h"], rec["params"], rec["seed"])
        candidates = live_by_key.get(key, [])
        if used[key] >= len(candidates):
            return diverge(step, "diverged", "the live run never sampled after this history (its prompt or "
                           "an earlier step differed, or it stopped early)", rec["tok"], None)
        other = candidates[used[key]]
        used[key] += 1
        result.steps_compared = step + 1
        a, b = rec_logits.get(rec["s"]), live_logits.get(other["s"])
        full_a = full_b = None
        if a is not None and b is not None:
            full_a, full_b = a.full().float(), b.full().float()
            both = a.known_mask() & b.known_mask() & full_a[0].isfinite() & full_b[0].isfinite()
            if both.any():
                diffs = (full_a[0][both] - full_b[0][both]).abs()
                step_diff = float(diffs.max())
                max_diff = step_diff if max_diff is None else max(max_diff, step_diff)
                if step_diff != 0:
                    result.status = "within_tolerance"
                if not torch.allclose(full_a[0][both], full_b[0][both], rtol=rtol, atol=atol):
                    return diverge(step, "diverged", f"logits differ by up to {step_diff:.3g}, beyond rtol={rtol:g}"
                                   f" atol={atol:g}", rec["tok"], other["tok"])
        if rec["tok"] != other["tok"]:
            if full_a is None or full_b is None:
                return diverge(step, "diverged", "the tokens differ and the logits to judge them were not "
                               "kept", rec["tok"], other["tok"])
            if _in_top_k(rec["tok"], full_b, top_k) and _in_top_k(other["tok"], full_a, top_k):
                return diverge(step, "within_tolerance", f"the tokens differ but each is in the other side's "
                               f"top {top_k}", rec["tok"], other["tok"])
            return diverge(step, "diverged", f"the tokens differ and are not both in the other side's top "
                           f"{top_k}", rec["tok"], other["tok"])
    extra = sum(len(v) - used[k] for k, v in live_by_key.items() if len(v) > used[k])
    if extra:
        return diverge(result.steps_compared, "diverged", f"the live run sampled {extra} more token(s) than "
                       "the recording", None, None)
    result.max_logit_diff = max_diff
    return result
