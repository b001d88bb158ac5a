"""What a ``CassetteMiss`` says: what was asked (ids and text), the nearest recorded input, how to re-record.

Text is rebuilt from the cassette's own tokenizer recordings (an encoded prompt, decode calls, and
the text each decoded window added), since a cassette holds no vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

from . import cassette as fmt
from ._cassette_values import decode_value

_HINT = fmt.RERECORD_HINT[0].upper() + fmt.RERECORD_HINT[1:] + "."
_SHOW_IDS = 12
_SHOW_CHARS = 160


def _cut_prefix(known: dict[str, list[int]], prefix_hash: str | None, length: int) -> list[int]:
    """The first ``length`` ids of a known history whose hash is ``prefix_hash``: the history a forward
    continued from a prefix-cache copy (a cut of an earlier history, never a forward's own); [] if none."""
    if prefix_hash is None:
        return []
    for ids in reversed(known.values()):  # the newest history is the likeliest
        if len(ids) >= length and fmt.HistoryHasher().extend(ids[:length]).hexdigest() == prefix_hash:
            return ids[:length]
    return []


def _first_difference(a: Sequence, b: Sequence) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def _clip(text: str) -> str:
    return repr(text if len(text) <= _SHOW_CHARS else "…" + text[-_SHOW_CHARS:])


def _ids_around(ids: Sequence[int], at: int) -> str:
    start = max(0, at - _SHOW_IDS // 2)
    shown = ", ".join(map(str, ids[start : start + _SHOW_IDS]))
    return f"[{'…, ' if start else ''}{shown}{', …' if start + _SHOW_IDS < len(ids) else ''}] (from position {start})"


class MissExplainer:
    """Builds miss messages for one loaded cassette; its lookups are built on the first miss only."""

    def __init__(self, cassette: fmt.Cassette) -> None:
        self.cassette = cassette

    @cached_property
    def histories(self) -> dict[str, list[int]]:
        """Every recorded forward's whole history, by its history hash."""
        known: dict[str, list[int]] = {}
        for forward in self.cassette.forwards():
            n = forward["n"]
            prefix = known.get(forward.get("ph", "")) if n else []
            if prefix is None:  # a prefix-cache hit: the cache held a cut of an earlier history
                prefix = _cut_prefix(known, forward.get("ph"), n)
            if len(prefix) == n:
                known.setdefault(forward["h"], prefix + forward["ids"])
        return known

    @cached_property
    def _texts(self) -> tuple[list[tuple[list[int], str]], dict[tuple, str], dict[int, str]]:
        encoded, decoded = [], {}
        for call in self.cassette.calls():
            out = decode_value(call["out"])
            if call["fn"] in ("__call__", "encode") and call["a"] and isinstance(call["a"][0], str):
                ids = out.get("input_ids") if hasattr(out, "get") else out
                if isinstance(ids, list) and all(isinstance(i, int) for i in ids):
                    encoded.append((ids, call["a"][0]))
            elif call["fn"] == "decode" and call["a"] and isinstance(out, str):
                ids = call["a"][0]
                if isinstance(ids, list) and all(isinstance(i, int) for i in ids):
                    decoded.setdefault(tuple(ids), out)
        pieces = {}
        for ids, text in decoded.items():
            shorter = decoded.get(ids[:-1])
            if ids and shorter is not None and text.startswith(shorter):
                pieces.setdefault(ids[-1], text[len(shorter) :])
        return encoded, decoded, pieces

    def describe(self, ids: Sequence[int]) -> str:
        """The text of ``ids`` as far as the recordings tell; unknown ids show as ⟨id⟩."""
        encoded, decoded, pieces = self._texts
        ids = list(ids)
        best_len, text = 0, ""
        for prompt_ids, prompt_text in encoded:
            if len(prompt_ids) > best_len and ids[: len(prompt_ids)] == prompt_ids:
                best_len, text = len(prompt_ids), prompt_text
        rest = tuple(ids[best_len:])
        if rest in decoded:
            return text + decoded[rest]
        return text + "".join(pieces.get(i, f"⟨{i}⟩") for i in rest)

    def _nearest(self, asked: list[int]) -> tuple[list[int], int] | None:
        best = None
        for history in self.histories.values():
            at = _first_difference(history, asked)
            score = (at, -abs(len(history) - len(asked)))
            if best is None or score > best[0]:
                best = (score, history, at)
        return (best[1], best[2]) if best else None

    def _header(self, what: str) -> str:
        return f"{what[0].upper()}{what[1:]} was never recorded in the cassette {self.cassette.path}"

    def _nearest_lines(self, asked: list[int]) -> list[str]:
        nearest = self._nearest(asked)
        if nearest is None:
            return ["  nearest recorded: none (the cassette holds no model forward)"]
        history, at = nearest
        lines = [f"  nearest recorded: {len(history)} ids, text {_clip(self.describe(history))}"]
        if at < min(len(history), len(asked)):
            lines.append(
                f"  first differs at position {at}: recorded id {history[at]} "
                f"({self.describe([history[at]])!r}), asked id {asked[at]} ({self.describe([asked[at]])!r})"
            )
            lines.append(f"    recorded ids {_ids_around(history, at)}")
            lines.append(f"    asked ids    {_ids_around(asked, at)}")
        elif len(history) < len(asked):
            lines.append(f"  the recording stops at position {at}; the asked history goes on with "
                         f"{_ids_around(asked, at)}")
        elif len(history) > len(asked):
            lines.append(f"  the asked history is a prefix of it (the recorded one goes on at position {at})")
        else:
            lines.append("  the same history was recorded; the call differs in how the ids were split between "
                         "cache and input_ids, or in its attention mask")
        return lines

    def forward(self, prefix_len: int, asked: list[int], mask: object) -> str:
        lines = [
            self._header("this model forward"),
            f"  asked: {len(asked)} ids ({prefix_len} from the cache + {len(asked) - prefix_len} new), "
            f"attention mask {mask if not isinstance(mask, list) else 'explicit'}",
            f"    ids {_ids_around(asked, max(prefix_len, len(asked) - _SHOW_IDS))}",
            f"    text {_clip(self.describe(asked))}",
            *self._nearest_lines(asked),
        ]
        return "\n".join([*lines, _HINT])

    def sample(self, asked: list[int], params: dict, seed: int | None) -> str:
        lines = [
            self._header("this token sampler call"),
            f"  asked: history of {len(asked)} ids, params {params}, seed {seed}",
            f"    text {_clip(self.describe(asked))}",
        ]
        same_history = [s for s in self.cassette.samples() if s["h"] == fmt.history_hash(asked)]
        if same_history:
            recorded = {(fmt.canonical_json(s["params"]), s["seed"]) for s in same_history}
            lines.append("  this history was recorded with other params/seed: " + "; ".join(
                f"params {p} seed {seed_}" for p, seed_ in sorted(recorded, key=str)))
        else:
            lines.extend(self._nearest_lines(asked))
        return "\n".join([*lines, _HINT])

    def call(self, method: str, args: list, kwargs: dict) -> str:
        asked = fmt.canonical_json([args, kwargs])
        same = [fmt.canonical_json([c["a"], c["kw"]]) for c in self.cassette.calls() if c["fn"] == method]
        lines = [self._header(f"this tokenizer call ({method})"), f"  asked: {method}(*{_cut(asked)})"]
        if same:
            nearest = max(same, key=lambda s: _first_difference(s, asked))
            at = _first_difference(nearest, asked)
            lines.append(f"  nearest recorded {method} call: {_cut(nearest)}")
            lines.append(f"  first differs at character {at}: recorded {nearest[at:at + 40]!r}, "
                         f"asked {asked[at:at + 40]!r}")
        else:
            lines.append(f"  the cassette holds no {method} call")
        return "\n".join([*lines, _HINT])


def _cut(text: str) -> str:
    return text if len(text) <= 2 * _SHOW_CHARS else text[:_SHOW_CHARS] + " … " + text[-_SHOW_CHARS:]
