"""The token sampler: logits and the token history in, the next token id out.

The decode loop talks to a ``TokenSampler`` and nothing else about sampling, so a recording or a
replaying sampler (probe mode, MockTransformer) can stand in for the default one.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

import torch

from .sampling import SamplingParams, apply_processors, build_processors, sample_from_scores


class TokenSampler(ABC):
    """Chooses the next token from the logits of the last position."""

    @abstractmethod
    def sample(
        self,
        logits: torch.Tensor,
        input_ids: torch.Tensor,
        params: SamplingParams,
        generator: torch.Generator | None = None,
    ) -> int:
        """Return the next token id.

        ``logits`` is ``(1, vocab)`` for the last position, ``input_ids`` is ``(1, seq)``: the prompt
        and every token generated so far. ``generator`` seeds the draw; None uses the sampler's own
        (TokenSamplerIsok: its seeded generator, or torch's global one when it has no seed).
        """


class TokenSamplerIsok(TokenSampler):
    """The default sampler: repetition penalty, temperature, top-k, top-p, then a seeded draw."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        # Without a seed, draws come from torch's global generator, as in ChatStream 0.3, so that
        # torch.manual_seed / transformers.set_seed make sampling reproducible.
        self._generator = None if seed is None else torch.Generator().manual_seed(seed)

    def sample(
        self,
        logits: torch.Tensor,
        input_ids: torch.Tensor,
        params: SamplingParams,
        generator: torch.Generator | None = None,
    ) -> int:
        processors = build_processors(params, vocab_size=logits.shape[-1])
        scores = apply_processors(processors, input_ids, logits)
        tokens, _ = sample_from_scores(scores, params.greedy, generator or self._generator)
        return int(tokens[0])


def make_generator(seed: int | None) -> torch.Generator | None:
    """A fresh CPU generator seeded with ``seed`` (one per generation), or None when no seed is set."""
    if seed is None:
        return None
    return torch.Generator().manual_seed(seed)


def draw_seed(seed: int | None, turn: int, regeneration: int, params: SamplingParams | None = None) -> int | None:
    """The seed of one answer: ``seed`` for a turn's first answer, and for its ``regeneration``-th
    regeneration (1, 2, ...) a seed derived from ``seed``, ``turn`` and ``regeneration``.

    So a regenerated answer is a new draw, and the same sequence of requests draws the same answers
    again (a cassette recorded with a seed replays). None stays None (unseeded), and so does a
    ``params`` that draws nothing (greedy or ``top_k=1``): its answer cannot change, nor its recording.
    """
    if seed is None or regeneration == 0 or (params is not None and (params.greedy or params.top_k == 1)):
        return seed
    material = f"chatstream.regenerate/{seed}/{turn}/{regeneration}".encode()
    return int.from_bytes(hashlib.blake2b(material, digest_size=8).digest(), "little") >> 1  # < 2**63
