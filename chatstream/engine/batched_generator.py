"""``BatchedChatGenerator``: ChatGenerator's ``stream()`` interface over the continuous-batching engine.

``ChatStream(chat_generator=BatchedChatGenerator(model, tokenizer, capacity=N))``, or
``ChatStream(..., batching=True)``, serves every admitted request from one scheduler thread that
batches their decode steps. ``stream()`` tokenises in the caller's thread (prompt truncation and
``PromptTooLongError`` as ChatGenerator), then blocks on the deltas the engine sends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..exceptions import ConfigurationError
from ._batch_cache import batching_unsupported
from .attention_kernel import prefer_grouped_query_sdpa
from .batching import BatchEngine
from .chat_prompt import AbstractChatPrompt
from .constraints import compiler_of
from .detokenizer import StreamingDetokenizer
from .device import resolve_device
from .events import FinishEvent, FinishReason, GenerationEvent, check_top_logprobs, text_deltas
from .generation import GenerationParams, answer_eos_ids, answer_stop_strings, build_input_ids, eos_token_ids
from .prefix_cache import make_prefix_cache
from .token_sampler import TokenSampler, TokenSamplerIsok, make_generator


class BatchedChatGenerator:
    """Generates chat answers for up to ``capacity`` streams at once, one batched forward per step.

    ``prefix_cache_mb`` as ChatGenerator's (docs/prefix-cache.md). Raises ``ConfigurationError`` at
    construction for a model whose cache cannot be batched
    (see ``chatstream.engine._batch_cache.batching_unsupported``); serve such a model with ``ChatGenerator``
    (``ChatStream(batching=False)``).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        device: str | torch.device | None = None,
        params: GenerationParams | None = None,
        token_sampler: TokenSampler | None = None,
        num_gpus: int | None = None,
        capacity: int = 2,
        prefix_cache_mb: float | None = None,
    ) -> None:
        if model is None or tokenizer is None:
            raise ConfigurationError("a model and a tokenizer are needed to generate; pass both.")
        reason = batching_unsupported(model)
        if reason is not None:
            raise ConfigurationError(
                f"continuous batching does not support this model: {reason}. Serve it without batching "
                "(ChatStream(batching=False), `chatstream serve --no-batching`, or chatstream.ChatGenerator)."
            )
        self.model = model
        self.tokenizer = tokenizer
        self.device = resolve_device(device if device is not None else getattr(model, "device", None), num_gpus)
        self.params = params or GenerationParams()
        self.token_sampler = token_sampler or TokenSamplerIsok(seed=self.params.seed)
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.prefix_cache = make_prefix_cache(prefix_cache_mb, self.device)
        prefer_grouped_query_sdpa(self.device)  # a continued prefill need not copy the cached history
        self.engine = BatchEngine(model, self.token_sampler, self.device, capacity, self.prefix_cache)

    def stream(
        self,
        chat_prompt: AbstractChatPrompt,
        params: GenerationParams | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[str]:
        """Yield the answer to ``chat_prompt`` as text deltas (its last responder turn must be open)."""
        return text_deltas(self.events(chat_prompt, params, should_stop))

    def events(
        self,
        chat_prompt: AbstractChatPrompt,
        params: GenerationParams | None = None,
        should_stop: Callable[[], bool] | None = None,
        logprobs: int | None = None,
    ) -> Iterator[GenerationEvent]:
        """``ChatGenerator.events`` for a batched stream: a ``TokenEvent`` per token, then a ``FinishEvent``."""
        params = params or self.params
        input_ids, max_new_tokens = build_input_ids(chat_prompt, self.tokenizer, params)
        yield from self.events_from_ids(input_ids, params, max_new_tokens, answer_stop_strings(chat_prompt, params),
                                        should_stop, check_top_logprobs(logprobs))

    def stream_ids(
        self,
        input_ids: list[int],
        params: GenerationParams,
        max_new_tokens: int | None = None,
        stop_strings: list[str] | tuple[str, ...] = (),
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[str]:
        """Yield the continuation of ``input_ids`` as text deltas (benchmarks and tests start from ids)."""
        return text_deltas(self.events_from_ids(input_ids, params, max_new_tokens, stop_strings, should_stop))

    def events_from_ids(
        self,
        input_ids: list[int],
        params: GenerationParams,
        max_new_tokens: int | None = None,
        stop_strings: list[str] | tuple[str, ...] = (),
        should_stop: Callable[[], bool] | None = None,
        logprobs: int | None = None,
    ) -> Iterator[GenerationEvent]:
        """The events of the continuation of ``input_ids``.

        The sequence is submitted on the first ``next()``; closing the iterator makes it leave the batch.
        """
        eos_ids = answer_eos_ids(self.eos_ids, params)
        constraint = None if params.constraint is None else compiler_of(self).start(params.constraint, eos_ids)
        submission = self.engine.submit(
            list(input_ids),
            max_new_tokens=max_new_tokens if max_new_tokens is not None else params.max_new_tokens,
            sampling=params.sampling,
            generator=make_generator(params.seed),
            eos_ids=eos_ids,
            detokenizer=StreamingDetokenizer(self.tokenizer, list(stop_strings), context_ids=list(input_ids)),
            should_stop=should_stop,
            logprobs=logprobs,
            constraint=constraint,
        )
        produced = 0
        try:
            for event in submission:
                yield event
                produced += 1
                if should_stop is not None and should_stop() and not isinstance(event, FinishEvent):
                    yield FinishEvent("", FinishReason.CANCELLED, len(input_ids), produced)
                    return
        finally:
            submission.cancel()

    def generate_text(self, chat_prompt: AbstractChatPrompt, params: GenerationParams | None = None) -> str:
        """The whole answer at once (console use, tests)."""
        return "".join(self.stream(chat_prompt, params))

    def close(self) -> None:
        """Stop the scheduler thread (streams still running end)."""
        self.engine.close()

