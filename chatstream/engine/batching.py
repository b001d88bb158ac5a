"""Continuous batching: one scheduler thread owns the model and runs one forward per step for all streams.

``BatchEngine.submit`` hands it a sequence (prompt ids, sampling parameters, its own generator, a
detokeniser); the caller reads text deltas from the returned ``Submission``. Between two steps the
scheduler admits new sequences (each prefilled alone, exactly as the unbatched loop prefills, so
its first token comes without waiting for the others) and drops those that finished, were
cancelled or whose ``should_stop`` says so. Each step is one forward over all running rows: one row
runs exactly the unbatched loop's forward; several run left-padded with per-row attention masks and
position ids over a stacked cache (``chatstream.engine._batch_cache``). Each row is sampled on its own
(``TokenSampler.sample`` per row, with the row's own history, parameters and generator), so a
seeded stream gives the same tokens whatever shares the batch, and recording/replaying samplers
work unchanged. docs/batching.md describes the design.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from ..exceptions import ConfigurationError
from ._batch_cache import copy_row, stack_rows, unstack_rows
from .batch_rows import ROWS_ATTR
from .constraints import ConstraintState
from .detokenizer import StreamingDetokenizer
from .events import FinishEvent, FinishReason, GenerationEvent, TokenEvent
from .generation import accepts_logits_to_keep
from .model_cache import cache_argument, decode_attention_mask, output_cache
from .prefix_cache import PrefixCache, copy_prefix
from .sampling import SamplingParams, sampled_logprobs
from .token_sampler import TokenSampler

_END = object()


def _copy_prompt(sequence: _Sequence, length: int) -> Any:
    """A copy of the first ``length`` positions of a running row's cache (its live prefix-cache entry). Its
    handle may be a stale row of the stacked cache or a view into an earlier one, but it always holds the
    prompt: rows only grow, and no position is rewritten (``store_live`` takes append-only caches only)."""
    with torch.inference_mode():
        return copy_prefix(sequence.handle, length)


class _Sequence:
    """One stream's state, touched only by the scheduler thread (``cancelled`` is set from outside)."""

    def __init__(self, input_ids: list[int], max_new_tokens: int, sampling: SamplingParams,
                 generator: torch.Generator | None, eos_ids: set[int], detokenizer: StreamingDetokenizer,
                 should_stop: Callable[[], bool] | None, device: torch.device,
                 logprobs: int | None = None, constraint: ConstraintState | None = None) -> None:
        prompt_len = len(input_ids)
        self.prompt_len = prompt_len
        self.logprobs = logprobs  # None: no log-probabilities (no cost); n: n alternatives per token
        self.history = torch.empty((1, prompt_len + max_new_tokens), dtype=torch.long, device=device)
        self.history[0, :prompt_len] = torch.tensor(input_ids, dtype=torch.long)
        self.length = prompt_len  # ids in the history: the prompt and every token fed so far
        self.cache_len = 0  # positions the model's cache holds for this row
        self.reused = 0  # prompt positions taken from the prefix cache
        self.produced = 0
        self.max_new_tokens = max_new_tokens
        self.sampling = sampling
        self.constraint = constraint  # its own grammar state, or None
        self.generator = generator
        self.eos_ids = eos_ids
        self.detokenizer = detokenizer
        self.should_stop = should_stop
        self.handle: Any = None  # the row's own cache object (from its prefill)
        self.live_key: int | None = None  # its prompt's live entry in the prefix cache, while it runs
        self.out: queue.SimpleQueue = queue.SimpleQueue()
        self.cancelled = False
        self.done = False


class Submission:
    """A submitted sequence: iterate it for its events (a ``TokenEvent`` per token, then a ``FinishEvent``);
    ``cancel()`` makes it leave the batch at once."""

    def __init__(self, engine: BatchEngine, sequence: _Sequence) -> None:
        self._engine = engine
        self._sequence = sequence

    def __iter__(self) -> Submission:
        return self

    def __next__(self) -> GenerationEvent:
        item = self._sequence.out.get()
        if item is _END:
            self._sequence.out.put(_END)  # later calls end too
            raise StopIteration
        if isinstance(item, BaseException):
            self._sequence.out.put(_END)
            raise item
        return item

    def cancel(self) -> None:
        self._engine._cancel(self._sequence)


class BatchEngine:
    """The scheduler: at most ``capacity`` sequences run; more wait (in order) inside the engine.

    The thread starts on the first ``submit`` and runs until ``close()``. A forward that raises fails
    every sequence of that step (each iterator raises the error); the engine goes on with the others.
    """

    def __init__(self, model: Any, sampler: TokenSampler, device: torch.device, capacity: int,
                 prefix_cache: PrefixCache | None = None) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ConfigurationError(f"`capacity` (={capacity!r}) must be an integer >= 1: the most sequences "
                                     "one forward runs (ChatStream passes num_of_concurrent_executions).")
        self.model = model
        self.sampler = sampler
        self.device = device
        self.capacity = capacity
        self.prefix_cache = prefix_cache if prefix_cache is not None and prefix_cache.enabled else None
        self.cache_name = cache_argument(model)
        self.decode_mask = decode_attention_mask(model)  # it resumes from its cache, with or without one
        self.logits_to_keep = accepts_logits_to_keep(model)
        self.peak_batch = 0  # the largest batch one forward ran (tests and benchmarks read it)
        self.steps = 0  # batched decode forwards run
        self._cond = threading.Condition()
        self._pending: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        self._closed = False
        self._thread: threading.Thread | None = None
        self._batch: list[_Sequence] = []  # the rows of the stacked cache, in order
        self._batch_cache: Any = None
        self._batch_mask: torch.Tensor | None = None

    # -- outside the scheduler thread ---------------------------------------------------------------------

    def submit(self, input_ids: list[int], *, max_new_tokens: int, sampling: SamplingParams,
               generator: torch.Generator | None, eos_ids: set[int], detokenizer: StreamingDetokenizer,
               should_stop: Callable[[], bool] | None = None, logprobs: int | None = None,
               constraint: ConstraintState | None = None) -> Submission:
        sequence = _Sequence(input_ids, max_new_tokens, sampling, generator, eos_ids, detokenizer, should_stop,
                             self.device, logprobs, constraint)
        with self._cond:
            if self._closed:
                raise ConfigurationError("this BatchEngine is closed; make a new BatchedChatGenerator.")
            self._pending.append(sequence)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="chatstream-batch", daemon=True)
                self._thread.start()
            self._cond.notify()
        return Submission(self, sequence)

    def _cancel(self, sequence: _Sequence) -> None:
        with self._cond:
            sequence.cancelled = True
            self._cond.notify()

    def close(self) -> None:
        """Stop the scheduler; sequences still running or waiting end (their iterators stop)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    @property
    def running(self) -> int:
        """Sequences admitted and not yet ended (an ended one has sent its last delta)."""
        return sum(not s.done for s in list(self._running))

    # -- the scheduler thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._pending and not self._running:
                    self._cond.wait()
                if self._closed:
                    for sequence in [*self._running, *self._pending]:
                        self._finish(sequence, FinishReason.CANCELLED)
                    self._running, self._batch, self._batch_cache = [], [], None
                    self._pending.clear()
                    return
                joining = []
                while self._pending and len(self._running) + len(joining) < self.capacity:
                    joining.append(self._pending.popleft())
            self._drop_leavers()
            for sequence in joining:
                if not self._leaving(sequence):
                    self._prefill(sequence)
                if not sequence.done:
                    self._running.append(sequence)
            self._drop_leavers()
            if self._running:
                self._step()
                self._drop_leavers()

    def _leaving(self, sequence: _Sequence) -> bool:
        if not sequence.done and (sequence.cancelled or (sequence.should_stop is not None and sequence.should_stop())):
            self._finish(sequence, FinishReason.CANCELLED)
        return sequence.done

    def _drop_leavers(self) -> None:
        self._running = [s for s in self._running if not self._leaving(s)]

    def _finish(self, sequence: _Sequence, reason: FinishReason | None, error: BaseException | None = None,
                eos: bool = False) -> None:
        """End ``sequence``: its ``FinishEvent`` (the detokeniser's tail unless cancelled or stopped by a stop
        string), or ``error``. ``eos``: it ended on an EOS token, counted as generated (as ChatGenerator does)."""
        if sequence.done:
            return
        sequence.done = True
        if error is None:
            self._keep_prefix(sequence)
        if self.prefix_cache is not None:
            self.prefix_cache.forget(sequence.live_key)
        if error is not None:
            sequence.out.put(error)
        else:
            tail = sequence.detokenizer.finish() if reason is not FinishReason.CANCELLED and \
                not sequence.detokenizer.stopped else ""
            sequence.out.put(FinishEvent(tail, reason, sequence.prompt_len, sequence.produced + eos, sequence.reused))
            sequence.out.put(_END)
        sequence.handle = None

    def _keep_prefix(self, sequence: _Sequence) -> None:
        """Give the prefix cache a compact copy of the row's cache (the handle may be a stale row of the
        stacked cache, or a view into an earlier one)."""
        if self.prefix_cache is None or sequence.handle is None or not sequence.cache_len:
            return
        with torch.inference_mode():
            if len(self._batch) > 1 and sequence in self._batch:
                kept = copy_row(self._batch_cache, self._batch.index(sequence), sequence.cache_len)
            else:
                kept = copy_prefix(sequence.handle, sequence.cache_len)
            self.prefix_cache.store(sequence.history[0, : sequence.cache_len], kept)

    def _forward(self, **kwargs: Any) -> Any:
        if self.logits_to_keep:
            kwargs["logits_to_keep"] = 1
        with torch.inference_mode():
            return self.model(use_cache=True, **kwargs)

    def _prefill(self, sequence: _Sequence) -> None:
        """The sequence's prompt alone (batch size 1, as the unbatched loop), then its first token."""
        try:
            ids = sequence.history[:, : sequence.length]
            cache = None
            if self.prefix_cache is not None:
                with torch.inference_mode():
                    cache, sequence.reused = self.prefix_cache.take(ids[0].tolist())
            output = self._forward(input_ids=ids[:, sequence.reused :], attention_mask=torch.ones_like(ids),
                                   **{self.cache_name: cache})
            sequence.handle = output_cache(output)
            sequence.cache_len = sequence.length
            self._take(sequence, output.logits[:, -1, :])
            if self.prefix_cache is not None:  # its first token is sent: later arrivals reuse the prompt
                with torch.inference_mode():
                    sequence.live_key = self.prefix_cache.store_live(ids[0], sequence.handle,
                                                                     partial(_copy_prompt, sequence))
        except Exception as error:
            self._finish(sequence, None, error=error)

    def _take(self, sequence: _Sequence, logits: torch.Tensor) -> None:
        """Sample the row's next token from its (1, vocab) logits and emit it (or end the sequence)."""
        with torch.inference_mode():
            history = sequence.history[:, : sequence.length]
            if sequence.constraint is not None:  # after the forward, before the sampler's processors
                logits = sequence.constraint.mask(logits)
            token = self.sampler.sample(logits, history, sequence.sampling, sequence.generator)
            if sequence.constraint is not None:
                sequence.constraint.advance(token)
            if sequence.logprobs is not None and token not in sequence.eos_ids:
                chosen, top = sampled_logprobs(sequence.sampling, history, logits, token, sequence.logprobs)
        if token in sequence.eos_ids:
            self._finish(sequence, FinishReason.STOP, eos=True)
            return
        delta = sequence.detokenizer.push(token)
        if sequence.logprobs is not None:
            sequence.out.put(TokenEvent(token, delta, chosen, top))
        else:
            sequence.out.put(TokenEvent(token, delta))
        sequence.produced += 1
        if sequence.detokenizer.stopped:
            self._finish(sequence, FinishReason.STOP)
        elif sequence.produced >= sequence.max_new_tokens:
            self._finish(sequence, FinishReason.LENGTH)
        else:
            sequence.history[0, sequence.length] = token
            sequence.length += 1

    def _step(self) -> None:
        """One decode forward over every running row, then one token per row."""
        rows = self._running
        try:
            if rows != self._batch:
                self._restack(rows)
            with torch.inference_mode():
                step_ids = torch.cat([s.history[:, s.length - 1 : s.length] for s in rows])
                if len(rows) == 1:
                    sequence = rows[0]
                    ones = torch.ones_like(sequence.history[:, : sequence.length]) if self.decode_mask else None
                    output = self._forward(input_ids=step_ids, attention_mask=ones,
                                           **{self.cache_name: sequence.handle})
                    sequence.handle = output_cache(output)
                else:
                    mask = self._batch_mask = torch.cat(
                        [self._batch_mask, torch.ones((len(rows), 1), dtype=torch.long, device=self.device)], dim=1)
                    positions = torch.tensor([[s.cache_len] for s in rows], dtype=torch.long, device=self.device)
                    output = self._forward(input_ids=step_ids, attention_mask=mask, position_ids=positions,
                                           **{self.cache_name: self._batch_cache})
                    cache = output_cache(output)
                    if cache is not self._batch_cache:
                        setattr(cache, ROWS_ATTR, getattr(self._batch_cache, ROWS_ATTR))
                        self._batch_cache = cache
                    self.steps += 1
                self.peak_batch = max(self.peak_batch, len(rows))
                logits = output.logits.select(1, -1)
        except Exception as error:
            for sequence in rows:
                self._finish(sequence, None, error=error)
            self._batch, self._batch_cache, self._batch_mask = [], None, None
            return
        for i, sequence in enumerate(rows):
            sequence.cache_len += 1
            try:
                self._take(sequence, logits[i : i + 1])
            except Exception as error:
                self._finish(sequence, None, error=error)

    def _restack(self, rows: list[_Sequence]) -> None:
        """Rebuild the batch for ``rows``: the old stacked cache goes back to its row handles first."""
        if len(self._batch) > 1 and self._batch_cache is not None:
            unstack_rows(self._batch_cache, [s.cache_len for s in self._batch])
        self._batch, self._batch_cache, self._batch_mask = list(rows), None, None
        if len(rows) > 1:
            lengths = [s.cache_len for s in rows]
            width = max(lengths)
            self._batch_cache = stack_rows([s.handle for s in rows], lengths)
            mask = torch.zeros((len(rows), width), dtype=torch.long, device=self.device)
            for i, length in enumerate(lengths):
                mask[i, width - length :] = 1
            self._batch_mask = mask
