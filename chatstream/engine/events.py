"""What a generation reports besides its text: one event per sampled token, then one finish event.

``ChatGenerator.events(...)`` yields ``TokenEvent`` for every generated token (its id, the text it
released, and, when asked, its log-probability and the most likely alternatives under the distribution
the sampler drew from), then a single ``FinishEvent`` (the held-back tail of the text, why the answer
ended, and the token counts). ``ChatGenerator.stream(...)`` is the text-only view of the same events.
``generation_events`` gives the events of any generator, also one that only has ``stream()``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

MAX_TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs


class FinishReason(str, enum.Enum):
    """Why an answer ended: ``stop`` (EOS or a stop string), ``length`` (the token limit), ``cancelled``
    (``should_stop`` said so, e.g. the client left)."""

    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"


@dataclass(slots=True)  # not frozen: one is made per token, and a frozen one takes 4x as long to make (~0.4 µs)
class TokenEvent:
    """One generated token. ``text`` is what it made safe to show (may be ""; stop strings never show).

    ``logprob`` and ``top_logprobs`` ((token id, logprob) pairs, most likely first) are set only when
    log-probabilities were asked for; the generator mock and stream-only generators give ``token_id`` -1.
    Treat it as read-only: it is handed on as it is.
    """

    token_id: int
    text: str
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class FinishEvent:
    """The end of an answer: the last text held back (e.g. a possible stop-string start), the reason,
    and the usage counts (the prompt after truncation; generated tokens, EOS included; the prompt tokens
    taken from the prefix cache instead of prefilled)."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


GenerationEvent = TokenEvent | FinishEvent


def check_top_logprobs(value: object) -> int | None:
    """``logprobs`` for ``events()``: None (no log-probabilities) or an int in [0, 20]."""
    from ..exceptions import ConfigurationError

    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOP_LOGPROBS:
        raise ConfigurationError(f"`logprobs` (={value!r}) must be None (no log-probabilities) or the number of "
                                 f"alternatives to report per token, an integer in [0, {MAX_TOP_LOGPROBS}].")
    return value


def text_deltas(events: Iterator[GenerationEvent]) -> Iterator[str]:
    """The text view of ``events``: each non-empty text in order; closing it closes ``events`` (which
    stops the generation behind them)."""
    try:
        for event in events:
            if event.text:
                yield event.text
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


def events_from_deltas(
    deltas: Iterator[str], max_new_tokens: int, prompt_tokens: int, should_stop: Callable[[], bool] | None = None
) -> Iterator[GenerationEvent]:
    """Events for a text-only stream: each delta counts as one token (id -1); ``length`` when it gave
    ``max_new_tokens`` deltas, ``cancelled`` when ``should_stop`` is set at the end, else ``stop``."""
    count = 0
    try:
        for delta in deltas:
            count += 1
            yield TokenEvent(-1, delta)
    finally:
        close = getattr(deltas, "close", None)
        if close is not None:
            close()
    if should_stop is not None and should_stop():
        reason = FinishReason.CANCELLED
    else:
        reason = FinishReason.LENGTH if count >= max_new_tokens else FinishReason.STOP
    yield FinishEvent("", reason, prompt_tokens, count)


def generation_events(
    generator: Any,
    chat_prompt: Any,
    params: Any = None,
    should_stop: Callable[[], bool] | None = None,
    logprobs: int | None = None,
) -> Iterator[GenerationEvent]:
    """``generator.events(...)`` when it has one, else its ``stream(...)`` deltas as events (no logprobs)."""
    events = getattr(generator, "events", None)
    if callable(events):
        return events(chat_prompt, params, should_stop=should_stop, logprobs=logprobs)
    effective = params if params is not None else getattr(generator, "params", None)
    max_new_tokens = getattr(effective, "max_new_tokens", 0) or 1 << 30
    deltas = generator.stream(chat_prompt, params, should_stop=should_stop)  # None stays None: its own defaults
    return events_from_deltas(iter(deltas), max_new_tokens, 0, should_stop)
