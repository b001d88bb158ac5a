"""The generations a cassette holds: each answer as its prompt ids, sampling parameters, seed and sampler calls.

A cassette stores sampler calls keyed by content, not by conversation, so the answers are rebuilt
here: a sampler call continues an answer when its history is that answer's history plus the token
the answer's last call returned (same parameters and seed); any other call starts a new answer.
Answers whose prompt extends an earlier answer's prompt belong to the same conversation (the next
turn re-sends the history). ``chatstream cassette show`` / ``diff`` / ``verify`` read cassettes this way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import cassette as fmt
from ._cassette_miss import MissExplainer


@dataclass
class Generation:
    """One answer: the prompt's ids (None when the cassette cannot rebuild them) and its sampler calls."""

    index: int
    prompt_ids: list[int] | None
    params: dict
    seed: int | None
    samples: list[dict] = field(default_factory=list)

    @property
    def tokens(self) -> list[int]:
        """Every token the sampler returned, the last one included (an EOS when the answer ended there)."""
        return [s["tok"] for s in self.samples]

    @property
    def key(self) -> str:
        """What the same answer in another recording is matched by: prompt history, parameters and seed."""
        return fmt.sample_key(self.samples[0]["h"], self.params, self.seed)


def generations(cassette: fmt.Cassette, explain: MissExplainer | None = None) -> list[Generation]:
    """The answers in ``cassette``, in the order their first sampler call was recorded."""
    histories = (explain or MissExplainer(cassette)).histories
    found: list[Generation] = []
    # the sample key an open answer's next call would have -> (answer, hasher of that next history)
    waiting: dict[str, list[tuple[Generation, fmt.HistoryHasher | None]]] = {}
    for sample in cassette.samples():
        params_json = fmt.canonical_json(sample["params"])
        key = fmt.sample_key(sample["h"], params_json, sample["seed"])
        queue = waiting.get(key)
        if queue:
            generation, hasher = queue.pop(0)
        else:
            ids = histories.get(sample["h"])
            generation = Generation(len(found), ids, sample["params"], sample["seed"])
            found.append(generation)
            hasher = fmt.HistoryHasher().extend(ids) if ids is not None else None
        generation.samples.append(sample)
        if hasher is not None:
            following = hasher.extend([sample["tok"]])
            next_key = fmt.sample_key(following.hexdigest(), params_json, sample["seed"])
            waiting.setdefault(next_key, []).append((generation, following))
    return found


def conversations(found: list[Generation]) -> list[list[Generation]]:
    """``found`` grouped into conversations: an answer whose prompt starts with an earlier answer's prompt
    joins that answer's conversation (the longest such prompt wins)."""
    groups: list[list[Generation]] = []
    owner: list[tuple[list[int], int]] = []  # (prompt ids, group index), in recorded order
    for generation in found:
        prompt = generation.prompt_ids
        best = None
        if prompt is not None:
            for ids, group in owner:
                if len(ids) <= len(prompt) and prompt[: len(ids)] == ids and (best is None or len(ids) > best[0]):
                    best = (len(ids), group)
        if best is None:
            groups.append([generation])
            group_index = len(groups) - 1
        else:
            group_index = best[1]
            groups[group_index].append(generation)
        if prompt is not None:
            owner.append((prompt, group_index))
    return groups
