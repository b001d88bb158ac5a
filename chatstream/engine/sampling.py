"""Sampling controls as pure logits processors, and the one function that turns logits into a token.

Each processor is ``__call__(input_ids, scores) -> scores``: it returns a new tensor and never edits
its input. ``build_processors`` chains them in the fixed order logit bias, repetition penalty, presence/frequency
penalties, temperature, top-k, top-p, and leaves out any that would change nothing. ``input_ids`` is
``(batch, seq)`` and ``scores`` is ``(batch, vocab)``, as in transformers' logits processors.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Protocol

import torch

from ..exceptions import ConfigurationError

REPETITION_PENALTY_METHODS = ("multiplicative", "subtractive")
# Bounds that keep every accepted value generating: with logits up to ~1e4 (float16 logits are upcast to
# float32 first), dividing by the smallest temperature and penalty stays far below float32's 3.4e38, and
# multiplying by the largest penalty stays finite, so the probabilities are never inf or NaN.
MIN_TEMPERATURE = 1e-4
MIN_PENALTY = 1e-4
MAX_PENALTY = 1e4


class LogitsProcessor(Protocol):
    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen. ``temperature=0`` means greedy decoding."""

    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float | None = 1.0
    repetition_penalty: float | None = None
    repetition_penalty_method: str = "multiplicative"
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias in [-100, 100]) added to its logit
    constraint: str | None = None  # the key of the stream's decoding constraint (engine.constraints)

    def __post_init__(self) -> None:
        object.__setattr__(self, "logit_bias", normalize_logit_bias(self.logit_bias))
        if self.constraint is not None and not isinstance(self.constraint, str):
            raise ConfigurationError(f"`constraint` (={self.constraint!r}) must be a constraint's key (a str) or None.")
        _check_temperature(self.temperature)
        for name in ("presence_penalty", "frequency_penalty"):
            _check_additive_penalty(name, getattr(self, name))
        if self.top_k is not None:
            _check_top_k(self.top_k)
        if self.top_p is not None:
            _check_top_p(self.top_p)
        if self.repetition_penalty_method not in REPETITION_PENALTY_METHODS:
            raise ConfigurationError(
                f"`repetition_penalty_method` (={self.repetition_penalty_method!r}) must be one of "
                f"{', '.join(map(repr, REPETITION_PENALTY_METHODS))}."
            )
        if self.repetition_penalty is not None:
            _check_penalty(self.repetition_penalty, self.repetition_penalty_method)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict:
        """The fields as a dict; the presence/frequency penalties only when set, so the dict (and the
        cassette sample keys made from it) of params that do not use them is what it was before them."""
        data = asdict(self)
        for name in ("presence_penalty", "frequency_penalty", "logit_bias", "constraint"):
            if not data[name]:
                del data[name]
        if "logit_bias" in data:
            data["logit_bias"] = [list(pair) for pair in self.logit_bias]
        return data


def normalize_logit_bias(value: object) -> tuple[tuple[int, float], ...]:
    """``logit_bias`` as sorted ``(token id, bias)`` pairs, from a mapping (OpenAI's ``{"id": bias}``, keys
    may be strings of ids) or pairs; each id an int >= 0, each bias a number in [-100, 100]."""
    items = value.items() if isinstance(value, dict) else value
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        raise ConfigurationError(f"`logit_bias` (={value!r:.80}) must map token ids to biases in [-100, 100].")
    pairs: dict[int, float] = {}
    for item in items:
        try:
            key, bias = item
            token = int(key) if isinstance(key, str) and key.strip().isdigit() else key
        except (TypeError, ValueError):
            raise ConfigurationError(f"`logit_bias` holds {item!r:.40}; give (token id, bias) pairs.") from None
        if isinstance(token, bool) or not isinstance(token, int) or token < 0:
            raise ConfigurationError(f"`logit_bias` key {key!r} is not a token id (an integer >= 0).")
        if not _is_number(bias) or not -100 <= bias <= 100:
            raise ConfigurationError(f"`logit_bias` for token {token} (={bias!r}) must be a number in [-100, 100].")
        pairs[token] = float(bias)
    return tuple(sorted(pairs.items()))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_temperature(value: object) -> None:
    if not _is_number(value) or value < 0 or 0 < value < MIN_TEMPERATURE:
        raise ConfigurationError(
            f"`temperature` (={value!r}) must be 0 (greedy decoding) or a number >= {MIN_TEMPERATURE}; "
            "1.0 samples from the model's own distribution."
        )


def _check_top_k(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"`top_k` (={value!r}) must be an integer >= 1; use None to disable top-k filtering."
        )


def _check_top_p(value: object) -> None:
    if not _is_number(value) or not 0 < value <= 1:
        raise ConfigurationError(
            f"`top_p` (={value!r}) must be a number in (0, 1]; use 1.0 or None to disable top-p filtering."
        )


def _check_penalty(value: object, method: str) -> None:
    if method == "multiplicative" and (not _is_number(value) or not MIN_PENALTY <= value <= MAX_PENALTY):
        raise ConfigurationError(
            f"`repetition_penalty` (={value!r}) must be a number in [{MIN_PENALTY}, {MAX_PENALTY}] with the "
            "multiplicative method (1.0 changes nothing, values above 1.0 discourage repeats); use None to disable it."
        )
    if method == "subtractive" and (not _is_number(value) or not 0 <= value <= MAX_PENALTY):
        raise ConfigurationError(
            f"`repetition_penalty` (={value!r}) must be a number in [0, {MAX_PENALTY}] with the subtractive "
            "method (0 changes nothing); use None to disable it."
        )


def _wide(scores: torch.Tensor) -> torch.Tensor:
    """float16 scores as float32, so that dividing by a small temperature or penalty cannot overflow."""
    return scores.float() if scores.dtype == torch.float16 else scores


def _check_additive_penalty(name: str, value: object) -> None:
    if not _is_number(value) or not -2.0 <= value <= 2.0:
        raise ConfigurationError(
            f"`{name}` (={value!r}) must be a number in [-2.0, 2.0] (as in OpenAI's API); 0 changes nothing, "
            "positive values discourage tokens already in the text."
        )


class RepetitionPenaltyProcessor:
    """Penalise every token already in ``input_ids``.

    ``multiplicative`` is the sign-aware form (CTRL, transformers): positive logits are divided by
    the penalty and negative ones multiplied, so a penalty above 1 always makes a repeat less likely.
    ``subtractive`` subtracts the penalty from the logit of each token already seen.
    """

    def __init__(self, penalty: float, method: str = "multiplicative") -> None:
        if method not in REPETITION_PENALTY_METHODS:
            raise ConfigurationError(
                f"`repetition_penalty_method` (={method!r}) must be one of "
                f"{', '.join(map(repr, REPETITION_PENALTY_METHODS))}."
            )
        _check_penalty(penalty, method)
        self.penalty = float(penalty)
        self.method = method

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] == 0:
            return scores.clone()
        scores = _wide(scores)
        seen = torch.gather(scores, 1, input_ids)
        if self.method == "multiplicative":
            seen = torch.where(seen > 0, seen / self.penalty, seen * self.penalty)
        else:
            seen = seen - self.penalty
        return scores.scatter(1, input_ids, seen)


class PresenceFrequencyPenaltyProcessor:
    """OpenAI's additive penalties: ``logit[t] -= presence * (count[t] > 0) + frequency * count[t]``.

    ``count[t]`` is how often token ``t`` occurs in ``input_ids``, the token history the sampler is given:
    the prompt and the answer so far (as TGI counts them; vLLM counts only the answer).
    """

    def __init__(self, presence_penalty: float = 0.0, frequency_penalty: float = 0.0) -> None:
        _check_additive_penalty("presence_penalty", presence_penalty)
        _check_additive_penalty("frequency_penalty", frequency_penalty)
        self.presence_penalty = float(presence_penalty)
        self.frequency_penalty = float(frequency_penalty)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        counts = torch.zeros(scores.shape, dtype=scores.dtype, device=scores.device)
        counts.scatter_add_(1, input_ids, torch.ones(input_ids.shape, dtype=scores.dtype, device=scores.device))
        return scores - (counts > 0).to(scores.dtype) * self.presence_penalty - counts * self.frequency_penalty


class TemperatureProcessor:
    """Divide the logits by a temperature > 0 (temperature 0, greedy, is handled by the sampler)."""

    def __init__(self, temperature: float) -> None:
        _check_temperature(temperature)
        if temperature == 0:
            raise ConfigurationError(
                "`temperature` (=0) cannot scale logits; greedy decoding takes the argmax instead "
                "(build_processors does this for you)."
            )
        self.temperature = float(temperature)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return _wide(scores) / self.temperature


class TopKProcessor:
    """Keep the ``top_k`` highest logits and set the rest to -inf (ties at the k-th value are kept)."""

    def __init__(self, top_k: int) -> None:
        _check_top_k(top_k)
        self.top_k = top_k

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        k = min(self.top_k, scores.shape[-1])
        kth_value = torch.topk(scores, k, dim=-1).values[..., -1:]
        return scores.masked_fill(scores < kth_value, -math.inf)


class TopPProcessor:
    """Keep the smallest set of most likely tokens whose probabilities add up to at least ``top_p``."""

    def __init__(self, top_p: float) -> None:
        _check_top_p(top_p)
        self.top_p = float(top_p)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        sorted_scores, sorted_indices = torch.sort(scores, descending=True, dim=-1)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        # A token is dropped when the tokens before it already reach top_p; the first always stays.
        sorted_drop = (cumulative - sorted_scores.softmax(dim=-1)) >= self.top_p
        sorted_drop[..., 0] = False
        drop = sorted_drop.scatter(1, sorted_indices, sorted_drop)
        return scores.masked_fill(drop, -math.inf)


class LogitBiasProcessor:
    """OpenAI's ``logit_bias``: add each bias to its token's logit (-100 bans a token, 100 all but forces it)."""

    def __init__(self, logit_bias: tuple[tuple[int, float], ...] | dict) -> None:
        pairs = normalize_logit_bias(logit_bias)
        self.ids = torch.tensor([token for token, _ in pairs], dtype=torch.long)
        self.biases = torch.tensor([bias for _, bias in pairs], dtype=torch.float32)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if len(self.ids) and int(self.ids.max()) >= scores.shape[-1]:
            raise ConfigurationError(f"`logit_bias` names token {int(self.ids.max())}, past the model's "
                                     f"{scores.shape[-1]} logits; use ids of this model's tokenizer.")
        scores = _wide(scores).clone()
        ids = self.ids.to(scores.device)
        scores[:, ids] += self.biases.to(device=scores.device, dtype=scores.dtype)
        return scores


def build_processors(params: SamplingParams, vocab_size: int | None = None) -> list[LogitsProcessor]:
    """The processors ``params`` asks for, in the fixed order, leaving out the ones that change nothing."""
    processors: list[LogitsProcessor] = []
    if params.logit_bias:
        processors.append(LogitBiasProcessor(params.logit_bias))
    penalty = params.repetition_penalty
    if penalty is not None and not (
        (params.repetition_penalty_method == "multiplicative" and penalty == 1.0)
        or (params.repetition_penalty_method == "subtractive" and penalty == 0.0)
    ):
        processors.append(RepetitionPenaltyProcessor(penalty, params.repetition_penalty_method))
    if params.presence_penalty or params.frequency_penalty:
        processors.append(PresenceFrequencyPenaltyProcessor(params.presence_penalty, params.frequency_penalty))
    if params.greedy:
        return processors  # argmax ignores temperature, top-k and top-p
    if params.temperature != 1.0:
        processors.append(TemperatureProcessor(params.temperature))
    if params.top_k is not None and (vocab_size is None or params.top_k < vocab_size):
        processors.append(TopKProcessor(params.top_k))
    if params.top_p is not None and params.top_p < 1.0:
        processors.append(TopPProcessor(params.top_p))
    return processors


def apply_processors(
    processors: list[LogitsProcessor], input_ids: torch.Tensor, scores: torch.Tensor
) -> torch.Tensor:
    for processor in processors:
        scores = processor(input_ids, scores)
    return scores


def sample_from_scores(
    scores: torch.Tensor, greedy: bool, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pick one token per row: the argmax when ``greedy``, else a draw from softmax(scores).

    Returns ``(token_ids, probs)``; ``probs`` is None for greedy decoding. Draws happen on the CPU in
    float32 so that one seed gives one token for the same logits on any device.
    """
    if greedy:
        return scores.argmax(dim=-1), None
    probs = scores.float().softmax(dim=-1)
    cpu_probs = probs if probs.device.type == "cpu" else probs.cpu()
    tokens = torch.multinomial(cpu_probs, num_samples=1, generator=generator).squeeze(-1)
    return tokens.to(scores.device), probs


def top_logprobs(
    scores: torch.Tensor, token_id: int, top_n: int
) -> tuple[float, list[tuple[int, float]]]:
    """The log-probability of ``token_id`` under softmax(``scores``) (a ``(1, vocab)`` row of processed
    logits) and the ``top_n`` most likely ids with theirs, most likely first."""
    logprobs = scores[0].float().log_softmax(dim=-1)
    chosen = float(logprobs[token_id])
    if top_n <= 0:
        return chosen, []
    top = torch.topk(logprobs, min(top_n, logprobs.shape[-1]))
    return chosen, list(zip(top.indices.tolist(), top.values.tolist(), strict=True))


def sampled_logprobs(
    params: SamplingParams, input_ids: torch.Tensor, logits: torch.Tensor, token_id: int, top_n: int
) -> tuple[float, tuple[tuple[int, float], ...]]:
    """``token_id``'s log-probability and the ``top_n`` likeliest ids with theirs, under the distribution a
    sampler with ``params`` draws from: ``logits`` through the processors TokenSamplerIsok and
    MockTokenSampler apply, so a replayed run gives what its recorded logits give."""
    scores = apply_processors(build_processors(params, vocab_size=logits.shape[-1]), input_ids, logits)
    chosen, top = top_logprobs(scores, token_id, top_n)
    return chosen, tuple(top)
