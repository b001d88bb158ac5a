"""The generation engine: prompt -> input ids (with truncation) -> KV-cache decode loop -> text deltas.

The loop prefills the prompt once, then feeds one token per step with the model's KV cache under
``torch.inference_mode()``. It stops on an EOS id, on a stop string (found by the detokeniser) or at
``max_new_tokens``. Everything here is blocking; the server drives it from a worker thread.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..exceptions import ConfigurationError, PromptTooLongError
from .attention_kernel import prefer_grouped_query_sdpa
from .chat_prompt import AbstractChatPrompt, ChatPromptFromTemplate
from .constraints import Constraint, ConstraintState, compiler_of
from .detokenizer import StreamingDetokenizer
from .device import resolve_device
from .events import FinishEvent, FinishReason, GenerationEvent, TokenEvent, check_top_logprobs, text_deltas
from .model_cache import cache_argument, decode_attention_mask, output_cache
from .prefix_cache import PrefixCache, make_prefix_cache
from .sampling import SamplingParams, normalize_logit_bias, sampled_logprobs
from .token_sampler import TokenSampler, TokenSamplerIsok, make_generator

SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


@dataclass(frozen=True)
class GenerationParams:
    """Everything that shapes one generation. Construction validates every field.

    ``stop_strings`` end the answer where they appear (never shown), on top of the prompt format's own;
    ``eos_token_ids`` end it at these ids, on top of the tokenizer's and the generation config's EOS:
    for a model whose EOS is not its template's end-of-turn token.
    """

    max_new_tokens: int = 256
    context_len: int = 1024
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float | None = 1.0
    repetition_penalty: float | None = None
    repetition_penalty_method: str = "multiplicative"
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    add_special_tokens: bool | None = None
    seed: int | None = None
    stop_strings: tuple[str, ...] = ()
    eos_token_ids: tuple[int, ...] = ()
    logit_bias: tuple[tuple[int, float], ...] = ()
    constraint: Constraint | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "logit_bias", normalize_logit_bias(self.logit_bias))
        if isinstance(self.constraint, dict):  # from JSON (a session store)
            object.__setattr__(self, "constraint", Constraint.from_dict(self.constraint))
        if self.constraint is not None and not isinstance(self.constraint, Constraint):
            raise ConfigurationError(f"`constraint` (={self.constraint!r:.60}) must be a "
                                     "chatstream.engine.constraints.Constraint (e.g. Constraint.json_schema(schema)).")
        # Lists (from JSON: sessions, request bodies) become tuples, so the params stay hashable and frozen.
        for name in ("stop_strings", "eos_token_ids"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise ConfigurationError(f"`{name}` (={value!r}) must be a list of "
                                         f"{'strings' if name == 'stop_strings' else 'token ids'}.")
            object.__setattr__(self, name, tuple(value))
        for text in self.stop_strings:
            if not isinstance(text, str) or not text:
                raise ConfigurationError(f"`stop_strings` holds {text!r}; each stop string must be a non-empty str.")
        for token_id in self.eos_token_ids:
            if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
                raise ConfigurationError(f"`eos_token_ids` holds {token_id!r}; each must be a token id (an int >= 0).")
        for name in ("max_new_tokens", "context_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"`{name}` (={value!r}) must be an integer >= 1.")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not SEED_MIN <= self.seed <= SEED_MAX):
            raise ConfigurationError(f"`seed` (={self.seed!r:.40}) must be an integer in [{SEED_MIN}, {SEED_MAX}] "
                                     "(what torch.Generator.manual_seed takes), or None.")
        if self.add_special_tokens is not None and not isinstance(self.add_special_tokens, bool):
            raise ConfigurationError(
                f"`add_special_tokens` (={self.add_special_tokens!r}) must be True, False or None."
            )
        self.sampling  # noqa: B018 - validates the sampling fields

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
            repetition_penalty_method=self.repetition_penalty_method,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logit_bias=self.logit_bias,
            constraint=self.constraint.key if self.constraint is not None else None,
        )

    def replace(self, **changes: Any) -> GenerationParams:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigurationError(
                f"unknown generation parameter(s) {sorted(unknown)}; known ones are "
                f"{[f.name for f in dataclasses.fields(self)]}."
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples as lists)."""
        data = dataclasses.asdict(self)
        data.update(stop_strings=list(self.stop_strings), eos_token_ids=list(self.eos_token_ids))
        for name in ("logit_bias", "constraint"):  # only when set: other params' dicts stay as they were
            if not data[name]:
                del data[name]
        if self.logit_bias:
            data["logit_bias"] = [list(pair) for pair in self.logit_bias]
        if self.constraint is not None:
            data["constraint"] = self.constraint.to_dict()
        return data


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every id that ends a response: the tokenizer's EOS and the model's generation_config EOS."""
    ids: set[int] = set()
    for source in (getattr(tokenizer, "eos_token_id", None),
                   getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(i) for i in source)
    return ids


def answer_eos_ids(eos_ids: set[int], params: GenerationParams) -> set[int]:
    """The ids that end an answer: the model's and tokenizer's ``eos_ids`` and the params' own."""
    return eos_ids.union(params.eos_token_ids) if params.eos_token_ids else eos_ids


def answer_stop_strings(chat_prompt: AbstractChatPrompt, params: GenerationParams) -> list[str]:
    """The strings that end an answer: the prompt format's (in chat mode) and the params' own."""
    own = chat_prompt.get_stop_strs() if chat_prompt.is_chat_mode_enabled() else None
    return [*(own or []), *params.stop_strings]


def encode(tokenizer: Any, text: str, add_special_tokens: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


_MEMO_ATTR = "_chatstream_input_ids"
_GALLOP_FIRST_ABOVE = 64  # messages: a longer history is searched from its newest turns first


def _signature(chat_prompt: AbstractChatPrompt, params: GenerationParams, add_special: bool) -> tuple:
    """What the ids of a prompt depend on (the strings are compared by identity first, so this is cheap)."""
    contents = tuple((c.role, c.message) for c in chat_prompt.chat_contents)
    return (params.max_new_tokens, params.context_len, add_special, chat_prompt.system, contents)


def build_input_ids(
    chat_prompt: AbstractChatPrompt, tokenizer: Any, params: GenerationParams
) -> tuple[list[int], int]:
    """Token ids of the prompt and how many new tokens may follow them.

    While prompt + ``max_new_tokens`` exceeds ``context_len``, the oldest turns are dropped (never the
    system message nor the current request); if that is not enough, fewer new tokens are allowed.
    Turns are dropped in steps of half the turns that fit (``_stable_drop``), so the kept history
    starts at the same turn for several turns in a row and the prefix cache keeps serving it, instead
    of every new turn dropping one more old one and changing the prompt from its start.
    ``chat_prompt`` itself is never changed.

    Cost: one tokenisation of the whole prompt when it fits. When it does not, the number of newest
    turns to keep is found by galloping (1, 2, 4, ... turns) then bisecting, so only prompts of about
    the kept size are tokenised, a few times: the cost follows what is kept, not the history's length.
    The result is remembered on ``chat_prompt`` for the same turns and parameters, so the admission
    check and the generator tokenise a request once.
    """
    add_special = params.add_special_tokens
    if add_special is None:
        add_special = not isinstance(chat_prompt, ChatPromptFromTemplate)  # templates carry their own BOS
    signature = _signature(chat_prompt, params, add_special)
    memo = chat_prompt.__dict__.get(_MEMO_ATTR)
    if memo is not None and memo[0] == signature:
        return list(memo[1]), memo[2]
    if len(chat_prompt.chat_contents) > _GALLOP_FIRST_ABOVE:  # a long history: likely too long, start small
        ids = _ids_of_newest_turns_that_fit(chat_prompt, tokenizer, params, add_special, whole_tried=False)
    else:
        ids = encode(tokenizer, chat_prompt.create_prompt(), add_special)
        if len(ids) + params.max_new_tokens > params.context_len:
            ids = _ids_of_newest_turns_that_fit(chat_prompt, tokenizer, params, add_special, whole_tried=True)
    room = params.context_len - len(ids)
    if room < 1:
        raise PromptTooLongError(
            f"the prompt is {len(ids)} tokens even with every older turn dropped, and context_len is "
            f"{params.context_len}; shorten the input (or the system message) or raise context_len."
        )
    chat_prompt.__dict__[_MEMO_ATTR] = (signature, ids, min(room, params.max_new_tokens))
    return list(ids), min(room, params.max_new_tokens)


def _ids_of_newest_turns_that_fit(
    chat_prompt: AbstractChatPrompt, tokenizer: Any, params: GenerationParams, add_special: bool, whole_tried: bool
) -> list[int]:
    """The ids of the prompt with the fewest oldest turns dropped that fits (only the last request if none).

    ``whole_tried``: the whole prompt is known not to fit (else it is one of the candidates)."""
    contents = chat_prompt.chat_contents
    starts = [i for i, c in enumerate(contents) if c.role == chat_prompt.requester]  # where each turn begins
    if len(starts) < 2:
        return encode(tokenizer, chat_prompt.create_prompt(), add_special)
    clone = chat_prompt.copy()
    cache: dict[int, list[int]] = {}

    def ids_keeping(turns: int) -> list[int]:  # the newest `turns` turns (dropping the oldest ones)
        if turns not in cache:
            clone.chat_contents = contents[starts[len(starts) - turns]:] if turns < len(starts) else contents
            cache[turns] = encode(tokenizer, clone.create_prompt(), add_special)
        return cache[turns]

    def fits(turns: int) -> bool:
        return len(ids_keeping(turns)) + params.max_new_tokens <= params.context_len

    most = len(starts) - 1 if whole_tried else len(starts)
    if not fits(1):
        return ids_keeping(1)
    good, bad = 1, None
    while bad is None:  # gallop: 1, 2, 4, ... kept turns until one does not fit
        step = min(good * 2, most)
        if step == good:
            return ids_keeping(len(starts) - _stable_drop(len(starts) - good, good))
        if fits(step):
            good = step
        else:
            bad = step
    while bad - good > 1:  # bisect between the last that fits and the first that does not
        middle = (good + bad) // 2
        if fits(middle):
            good = middle
        else:
            bad = middle
    return ids_keeping(len(starts) - _stable_drop(len(starts) - good, good))


def _stable_drop(fewest: int, fitting: int) -> int:
    """How many oldest turns to drop when at least ``fewest`` must go and ``fitting`` turns fit: ``fewest``
    rounded up to a multiple of half of ``fitting``. As a conversation grows by a turn, the count stays
    the same for that many turns, so the kept prompt keeps its start (and its cached prefix)."""
    step = max(1, fitting // 2)
    return min(-(-fewest // step) * step, fewest + fitting - 1)


def trim_history(chat_prompt: AbstractChatPrompt, max_turns: int) -> None:
    """Drop the oldest turns of ``chat_prompt`` (in place) until at most ``max_turns`` are left."""
    contents = chat_prompt.chat_contents
    starts = [i for i, c in enumerate(contents) if c.role == chat_prompt.requester]
    if len(starts) > max_turns:
        del contents[: starts[len(starts) - max_turns]]


def check_prompt_fits(generator: Any, chat_prompt: AbstractChatPrompt, params: GenerationParams) -> None:
    """Raise PromptTooLongError when ``chat_prompt`` cannot fit ``params.context_len`` for ``generator``
    (its own ``check_prompt`` when it has one, else its tokenizer's ids; a generator with neither, the mock,
    takes any prompt). Blocking: it tokenizes the history."""
    check = getattr(generator, "check_prompt", None)
    if callable(check):
        check(chat_prompt, params)
        return
    tokenizer = getattr(generator, "tokenizer", None)
    if tokenizer is not None:
        build_input_ids(chat_prompt, tokenizer, params)


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether ``model.forward`` takes ``logits_to_keep`` (then the loop asks for the last position only)."""
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return False


def decode_tokens(
    model: Any,
    input_ids: list[int],
    *,
    sampler: TokenSampler,
    sampling: SamplingParams,
    max_new_tokens: int,
    eos_ids: set[int],
    device: torch.device,
    generator: torch.Generator | None = None,
    on_sample: Callable[[torch.Tensor, torch.Tensor, int], None] | None = None,
    prefix_cache: PrefixCache | None = None,
    on_reuse: Callable[[int], None] | None = None,
    constraint: ConstraintState | None = None,
) -> Iterator[int]:
    """Yield generated token ids one by one: prefill once, then one KV-cached step per token.

    ``on_sample(logits, history, token)``, when given, sees each step's last-position logits ``(1, vocab)``,
    the history the sampler got and the token it chose (an EOS too), before the token is yielded.
    ``prefix_cache``, when given, supplies the longest cached prefix of the prompt (only the rest is
    prefilled; ``on_reuse(n)`` hears how many ids were reused) and keeps the cache when the loop ends or
    is closed (not when a step raised).
    ``constraint`` masks each step's logits before the sampler and follows the tokens it chose.
    """
    # Each step runs under inference mode; the mode is left before each yield so the caller's code
    # between tokens runs as it would without this loop (what @torch.inference_mode() does on a generator).
    inference = torch.inference_mode()
    prompt_len = len(input_ids)
    with inference:
        history = torch.empty((1, prompt_len + max_new_tokens), dtype=torch.long, device=device)
        history[0, :prompt_len] = torch.tensor(input_ids, dtype=torch.long)
        attention_mask = torch.ones_like(history)
        # A CPU buffer takes each new token through a NumPy view of its memory (~50 ns, not ~2 us).
        history_row = history.numpy()[0] if history.device.type == "cpu" else history[0]
        cache, reused = prefix_cache.take(input_ids) if prefix_cache is not None else (None, 0)
        step_input = history[:, reused:prompt_len]
    if on_reuse is not None:
        on_reuse(reused)
    extra = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    cache_name = cache_argument(model)
    decode_mask = decode_attention_mask(model)  # once per model: it resumes from its cache, with or without one
    token, cached = -1, 0
    try:
        for step in range(max_new_tokens):
            length = prompt_len + step
            with inference:
                mask = attention_mask[:, :length]
                if step:
                    history_row[length - 1] = token
                    step_input = history[:, length - 1 : length]
                if (step or reused) and not decode_mask:
                    mask = None  # a model that resumes only unmasked (mamba) gets none after its cache starts
                extra[cache_name] = cache
                output = model(input_ids=step_input, attention_mask=mask, use_cache=True, **extra)
                cache, cached = output_cache(output), length
                logits = output.logits.select(1, -1)
                if constraint is not None:
                    logits = constraint.mask(logits)
                token = sampler.sample(logits, history[:, :length], sampling, generator)
                if constraint is not None:
                    constraint.advance(token)
                if on_sample is not None:
                    on_sample(logits, history[:, :length], token)
                if not step and prefix_cache is not None:
                    # the prompt is prefilled: a request that arrives while this one decodes (the next choice
                    # of an n > 1 request) reuses it; a copy, as this stream decodes on into its own cache
                    prefix_cache.store_copy(history[0, :prompt_len], cache)
            if token in eos_ids:
                return
            yield token
    except Exception:
        cache = None  # a step failed part-way: its cache may be half-updated
        raise
    finally:
        if prefix_cache is not None and cached:
            prefix_cache.store(history[0, :cached], cache)


class ChatGenerator:
    """Generates a chat answer from a model, a tokenizer and a token sampler, as text deltas."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        device: str | torch.device | None = None,
        params: GenerationParams | None = None,
        token_sampler: TokenSampler | None = None,
        num_gpus: int | None = None,
        prefix_cache_mb: float | None = None,
    ) -> None:
        """``prefix_cache_mb``: the budget of the prefix cache (docs/prefix-cache.md); None: the device's
        default (``chatstream.engine.prefix_cache.default_prefix_cache_mb``), 0: off."""
        if model is None or tokenizer is None:
            raise ConfigurationError(
                "a model and a tokenizer are needed to generate; pass both, or use the generator mock "
                "(use_mock_response=True) to run without a model."
            )
        cache_argument(model)  # refuses, up front, a model whose cache the decode loop cannot carry
        self.model = model
        self.tokenizer = tokenizer
        self.device = resolve_device(device if device is not None else getattr(model, "device", None), num_gpus)
        self.params = params or GenerationParams()
        self.token_sampler = token_sampler or TokenSamplerIsok(seed=self.params.seed)
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.prefix_cache = make_prefix_cache(prefix_cache_mb, self.device)
        prefer_grouped_query_sdpa(self.device)  # a continued prefill need not copy the cached history

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
        """Yield a ``TokenEvent`` per generated token, then one ``FinishEvent`` (see chatstream.engine.events).

        ``logprobs`` None computes no log-probabilities (no cost); an int ``n`` in [0, 20] gives each token's
        log-probability and its ``n`` most likely alternatives under the distribution the sampler drew
        from: the step's logits through chatstream.engine.sampling's processors for ``params`` (what
        TokenSamplerIsok and MockTokenSampler apply), so a replayed run gives what its recorded logits give.
        """
        params = params or self.params
        logprobs = check_top_logprobs(logprobs)
        input_ids, max_new_tokens = build_input_ids(chat_prompt, self.tokenizer, params)
        detokenizer = StreamingDetokenizer(self.tokenizer, answer_stop_strings(chat_prompt, params),
                                           context_ids=input_ids)
        sampling = params.sampling
        eos_ids = answer_eos_ids(self.eos_ids, params)
        constraint = None if params.constraint is None else compiler_of(self).start(params.constraint, eos_ids)
        scored: list[tuple[float, tuple[tuple[int, float], ...]]] = []  # the last token's logprobs

        def score(logits: torch.Tensor, history: torch.Tensor, token: int) -> None:
            scored[:] = [sampled_logprobs(sampling, history, logits, token, logprobs)]

        reused: list[int] = []  # how many prompt ids the prefix cache supplied
        tokens = decode_tokens(
            self.model,
            input_ids,
            sampler=self.token_sampler,
            sampling=sampling,
            max_new_tokens=max_new_tokens,
            eos_ids=eos_ids,
            device=self.device,
            generator=make_generator(params.seed),
            on_sample=score if logprobs is not None else None,
            prefix_cache=self.prefix_cache if self.prefix_cache.enabled else None,
            on_reuse=reused.append,
            constraint=constraint,
        )
        count, reason = 0, None
        try:
            for token in tokens:
                count += 1
                delta = detokenizer.push(token)
                if scored:
                    yield TokenEvent(token, delta, *scored[0])
                else:
                    yield TokenEvent(token, delta)
                if detokenizer.stopped:
                    reason = FinishReason.STOP
                    break
                if should_stop is not None and should_stop():
                    reason = FinishReason.CANCELLED
                    break
            if reason is None:  # the loop ended: the token limit, or an EOS it did not yield
                reason = FinishReason.LENGTH if count >= max_new_tokens else FinishReason.STOP
                count += reason is FinishReason.STOP
        finally:
            tokens.close()
        tail = detokenizer.finish() if reason is not FinishReason.CANCELLED else ""  # a stopped answer ends as it is
        yield FinishEvent(tail, reason, len(input_ids), count, reused[0] if reused else 0)

    def generate_text(self, chat_prompt: AbstractChatPrompt, params: GenerationParams | None = None) -> str:
        """The whole answer at once (console use, tests)."""
        return "".join(self.stream(chat_prompt, params))
