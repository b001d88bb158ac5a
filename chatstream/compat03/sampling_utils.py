"""ChatStream 0.3's ``sampling(logits, k, p, temperature, past_tokens, penalty, penalty_method)``, over today's
sampler (chatstream.engine.sampling and token_sampler)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..engine.sampling import SamplingParams
from ..engine.token_sampler import TokenSamplerIsok


def sampling(logits: torch.Tensor, k: int | None = None, p: float | None = None, temperature: float = 1.0,
             past_tokens: Sequence[int] | None = None, penalty: float | None = None,
             penalty_method: str = "multiplicative") -> int:
    """One token id drawn from ``logits`` (one position, ``(vocab,)``) after the repetition penalty on
    ``past_tokens``, temperature, top-k and top-p. Unlike 0.3, top-p also applies when top-k is given, and a
    bad value raises ``ConfigurationError`` (0.3 printed a warning for NaN logits and went on)."""
    params = SamplingParams(temperature=temperature, top_k=k, top_p=p,
                            repetition_penalty=penalty if past_tokens is not None else None,
                            repetition_penalty_method=penalty_method)
    history = torch.tensor([list(past_tokens or [])], dtype=torch.long, device=logits.device)
    return TokenSamplerIsok().sample(logits.reshape(1, -1), history, params)


__all__ = ["sampling"]
