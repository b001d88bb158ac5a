"""Transformer Mock mode: a model, a tokenizer and a token sampler that replay a cassette.

``MockTransformer`` loads a cassette (every file checked first) and hands out ``MockModel``,
``MockTokenizer`` and ``MockTokenSampler``. They need no GPU and no weights. Forwards and sampler
calls are found by content (the token history), so conversations replay in any order and at the
same time; a key recorded several times replays its outputs in recorded order (then repeats the
last). Anything never recorded raises ``CassetteMiss`` saying what was asked and what is nearest.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..engine.batch_rows import split_rows
from ..engine.sampling import apply_processors, build_processors
from ..engine.token_sampler import TokenSampler
from ..exceptions import CassetteError, CassetteFormatError, CassetteMiss, ConfigurationError
from . import cassette as fmt
from ._cassette_miss import MissExplainer
from ._cassette_places import resolve_cassette_dir
from ._cassette_set import load_cassette_or_set
from ._cassette_values import (
    GENERATE_CALL,
    RECORDED_TOKENIZER_METHODS,
    call_key,
    decode_value,
    generate_call_args,
    normalize_arg,
)


class _Index:
    """The cassette's forwards and samples by key, each key with a thread-safe replay cursor."""

    def __init__(self, cassette: fmt.Cassette) -> None:
        self._forwards: dict[str, list[dict]] = defaultdict(list)
        self._by_history: dict[str, list[dict]] = defaultdict(list)  # the same, whatever the cache held
        self._samples: dict[str, list[dict]] = defaultdict(list)
        for f in cassette.forwards():
            self._forwards[fmt.forward_key(f["h"], f["n"], f["m"])].append(f)
            self._by_history[fmt.history_forward_key(f["h"], f["m"])].append(f)
        for s in cassette.samples():
            self._samples[fmt.sample_key(s["h"], s["params"], s["seed"])].append(s)
        self.calls: dict[str, Any] = {}
        self._generates: dict[str, list[dict]] = defaultdict(list)  # model.generate() calls, replayed in order
        for c in cassette.calls():
            key = call_key(c["fn"], c["a"], c["kw"])
            if c["fn"] == GENERATE_CALL:
                self._generates[key].append(c)
            else:
                self.calls.setdefault(key, c["out"])
        self._cursors: dict[tuple[str, str], int] = defaultdict(int)
        self._lock = threading.Lock()

    def _take(self, kind: str, table: dict[str, list[dict]], key: str) -> dict | None:
        entries = table.get(key)
        if not entries:
            return None
        if len(entries) == 1:  # the common case: a key recorded once replays it every time, no cursor needed
            return entries[0]
        with self._lock:
            i = self._cursors[kind, key]
            self._cursors[kind, key] = i + 1
        return entries[min(i, len(entries) - 1)]

    def forward(self, key: str, history_key: str) -> dict | None:
        """The forward recorded for ``key``; else one recorded for the same whole history split elsewhere
        (a prefix cache hit on one side only): its last position's logits are the ones asked for."""
        found = self._take("forward", self._forwards, key)
        return found if found is not None else self._take("history", self._by_history, history_key)

    def sample(self, key: str) -> dict | None:
        return self._take("sample", self._samples, key)

    def generate(self, key: str) -> dict | None:
        return self._take("generate", self._generates, key)


class MockCache(fmt.TokenHistory):
    """Stands in for a KV cache: it holds the token history (and its running hash) instead of keys and values.

    A forward given it appends to it in place, as transformers' caches are updated.
    """

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return len(self)

    def copy_prefix(self, length: int) -> MockCache:
        """A new MockCache of the first ``length`` ids (what the prefix cache reuses)."""
        return self.prefix(length)

    @property
    def nbytes(self) -> int:
        return 8 * len(self)

    @classmethod
    def stack_rows(cls, handles: list[MockCache], lengths: list[int]) -> MockBatchCache:
        """The batching engine's stacked cache for these rows (see chatstream.engine._batch_cache)."""
        return MockBatchCache(handles, max(lengths))

    def __repr__(self) -> str:
        return f"MockCache(seq_length={len(self)})"


class MockBatchCache:
    """Stands in for a batched KV cache: the rows' own MockCaches (``chatstream_rows``) and the padded width.

    A batched forward appends to each row's MockCache in place, so unstacking has nothing to do.
    """

    def __init__(self, rows: list[MockCache], width: int) -> None:
        self.chatstream_rows = tuple(rows)
        self.width = width

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.width

    def unstack_rows(self, lengths: list[int]) -> None:
        """Nothing to give back: each row's MockCache is already up to date."""

    def copy_row(self, index: int, length: int) -> MockCache:
        """A new MockCache of row ``index`` (its MockCache is up to date)."""
        return self.chatstream_rows[index].copy_prefix(length)

    def __repr__(self) -> str:
        return f"MockBatchCache(rows={len(self.chatstream_rows)}, width={self.width})"


class MockCausalLMOutput:
    """A forward's result: ``.logits`` (batch, 1, vocab) and ``.cache`` (also as ``.past_key_values``, the
    name before transformers 5.24), also by name or index.

    A plain class rather than transformers' ``CausalLMOutputWithPast``, whose construction costs
    more than the rest of a replayed step.
    """

    __slots__ = ("cache", "logits")

    def __init__(self, logits: torch.Tensor, cache: MockCache | None) -> None:
        self.logits = logits
        self.cache = cache

    @property
    def past_key_values(self) -> MockCache | None:
        return self.cache

    def to_tuple(self) -> tuple:
        return tuple(v for v in (self.logits, self.cache) if v is not None)

    def __getitem__(self, key: str | int) -> Any:
        return getattr(self, key) if isinstance(key, str) else self.to_tuple()[key]


def _device_of(args: tuple, kwargs: dict) -> torch.device | None:
    for value in (*args, kwargs.get("device")):
        if isinstance(value, (str, torch.device)) or (isinstance(value, int) and not isinstance(value, bool)):
            return torch.device(value)
        if isinstance(value, torch.Tensor):
            return value.device
    return None


_EMPTY_HISTORY = fmt.HistoryHasher()


def _rebuild_config(data: dict | None) -> Any:
    from transformers import AutoConfig, PretrainedConfig

    if data is None:
        return PretrainedConfig()
    data = dict(data)
    model_type = data.pop("model_type", None)
    try:
        return AutoConfig.for_model(model_type, **data)
    except (ValueError, KeyError, TypeError):
        return PretrainedConfig(**data)


def _rebuild_generation_config(data: dict | None) -> Any:
    from transformers import GenerationConfig

    # transformers 5 writes every unset field as None, which transformers 4 validates as a bad value
    # (e.g. early_stopping=None); unset is the default in both, so leave None fields out.
    return GenerationConfig.from_dict({k: v for k, v in data.items() if v is not None}) if data else GenerationConfig()


class RecordedGenerationConfig:
    """The recorded model's generation config: its recorded fields (``eos_token_id``, ``do_sample``, ...)
    are read without importing transformers, which costs seconds at replay start-up; anything else (a
    method, an unrecorded field) is answered by a real ``GenerationConfig`` rebuilt on first use."""

    def __init__(self, data: dict | None, manifest_path: Any = None) -> None:
        object.__setattr__(self, "_data", dict(data or {}))
        object.__setattr__(self, "_real", None)
        object.__setattr__(self, "_manifest_path", manifest_path)

    def real(self) -> Any:
        """The transformers ``GenerationConfig`` these fields make (built once)."""
        if self._real is None:
            try:
                real = _rebuild_generation_config(self._data)
            except Exception as error:  # the loader checked its type; transformers judges its content
                raise CassetteFormatError(f"{self._manifest_path}: model.generation_config cannot be rebuilt "
                                          f"({type(error).__name__}: {error}); {fmt.RERECORD_HINT}.") from None
            object.__setattr__(self, "_real", real)
        return self._real

    def __getattr__(self, name: str) -> Any:
        data = object.__getattribute__(self, "_data")
        if name in data:
            return data[name]
        return getattr(self.real(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._data[name] = value
        if self._real is not None:
            setattr(self._real, name, value)

    def to_dict(self) -> dict:
        return dict(self._data) if self._real is None else self._real.to_dict()

    def __repr__(self) -> str:
        return f"RecordedGenerationConfig({self._data!r})"


class MockModel:
    """Replays recorded forwards; to the runtime it looks like an HF causal LM in eval mode.

    A batched forward (the batching engine's) is answered row by row, each row by its own unpadded
    history, so a cassette replays batched or not whichever way it was recorded.
    """

    chatstream_batched_forward = True  # chatstream.engine._batch_cache: its rows stack through MockCache.stack_rows

    def __init__(self, transformer: MockTransformer) -> None:
        self._transformer = transformer
        info = transformer.manifest["model"]
        self.generation_config = RecordedGenerationConfig(info.get("generation_config"),
                                                          transformer.path / fmt.MANIFEST_NAME)
        self.name_or_path = info.get("name_or_path", "")
        self.dtype = getattr(torch, info.get("dtype", "float32"), torch.float32)
        self.device = torch.device("cpu")
        self.training = False
        self.recorded_on = info.get("device", {})
        # How the recorded decode steps were masked (chatstream.engine.model_cache); older cassettes: with.
        self.chatstream_decode_mask = info.get("decode_attention_mask", True)

    @functools.cached_property
    def config(self) -> Any:
        """The recorded model config, rebuilt on first use: importing a model's config class
        (transformers.models.<type>) costs seconds, and the runtime itself never reads it."""
        try:
            return _rebuild_config(self._transformer.manifest["model"].get("config"))
        except Exception as error:  # the loader checked its type; transformers judges its content
            raise CassetteFormatError(f"{self._transformer.path / fmt.MANIFEST_NAME}: model.config cannot be "
                                      f"rebuilt ({type(error).__name__}: {error}); {fmt.RERECORD_HINT}.") from None

    def to(self, *args: Any, **kwargs: Any) -> MockModel:
        """Move replayed tensors to a device; a dtype argument is ignored (logits keep the recorded dtype)."""
        device = _device_of(args, kwargs)
        if device is not None:
            self.device = device
        return self

    def cpu(self) -> MockModel:
        return self.to("cpu")

    def cuda(self, device: Any = None) -> MockModel:
        return self.to(torch.device("cuda", device) if isinstance(device, int) else device or "cuda")

    def eval(self) -> MockModel:
        self.training = False
        return self

    def train(self, mode: bool = True) -> MockModel:
        self.training = mode
        return self

    def requires_grad_(self, requires_grad: bool = True) -> MockModel:
        return self

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:
        return iter(())  # no weights: that is the point

    def __call__(self, *args: Any, **kwargs: Any) -> MockCausalLMOutput:
        return self.forward(*args, **kwargs)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> MockCausalLMOutput:
        """Replay a recorded forward. The cache comes as ``cache`` or, as before transformers 5.24,
        ``past_key_values``: a cassette holds no trace of the name, so either replays any cassette."""
        transformer = self._transformer
        if transformer.wait_sec:
            time.sleep(transformer.wait_sec)
        if input_ids is None or input_ids.dim() != 2:
            shape = None if input_ids is None else tuple(input_ids.shape)
            raise CassetteError(f"the mock model replays forwards given input_ids of shape (batch, n); got {shape}.")
        if cache is not None and past_key_values is not None:
            raise CassetteError("the mock model got both `cache` and `past_key_values`; pass the cache once.")
        given = cache if cache is not None else past_key_values
        if input_ids.shape[0] != 1 or isinstance(given, MockBatchCache):
            return self._forward_rows(input_ids, attention_mask, given)
        cache = given if isinstance(given, MockCache) else None
        if cache is None and given is not None and getattr(given, "get_seq_length", lambda: None)() != 0:
            raise CassetteError(
                f"the mock model got a {type(given).__name__} as its cache; pass None or the MockCache its "
                "previous forward returned."
            )
        prefix_len = 0 if cache is None else len(cache)
        new_ids = input_ids.tolist()[0]
        hasher = (_EMPTY_HISTORY if cache is None else cache.hasher).extend(new_ids)
        mask = fmt.attention_mask_code(attention_mask, prefix_len + len(new_ids))
        entry = transformer._index.forward(fmt.forward_key(hasher.hexdigest(), prefix_len, mask),
                                           fmt.history_forward_key(hasher.hexdigest(), mask))
        if entry is None:
            asked = (cache.ids if cache is not None else []) + new_ids
            raise CassetteMiss(transformer._explain.forward(prefix_len, asked, mask))
        logits = entry["logits"].step_logits(self.device)
        if use_cache is False:
            cache = None
        else:
            cache = cache if cache is not None else MockCache()
            cache.append(new_ids, hasher)
        transformer._local.cache = cache  # the sampler call that follows finds its history's hash here
        return MockCausalLMOutput(logits, cache)

    def _forward_rows(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      given: Any) -> MockCausalLMOutput:
        """Replay a batched forward row by row: each row's logits are its own recorded forward's."""
        rows = split_rows(input_ids, attention_mask, given)
        if rows is None or not isinstance(given, MockBatchCache):
            raise CassetteError(
                f"the mock model replays a batched forward (input_ids {tuple(input_ids.shape)}) only over the "
                f"MockBatchCache the batching engine stacks from its rows' MockCaches; got {type(given).__name__}."
            )
        transformer = self._transformer
        found = []
        for row in rows:
            handle = row.handle
            if not isinstance(handle, MockCache) or len(handle) != row.past_len:
                raise CassetteError(f"a batched row's cache is {handle!r}, not the MockCache of its "
                                    f"{row.past_len} positions; stack the MockCaches this model returned.")
            hasher = handle.hasher.extend(row.new_ids)
            mask = fmt.attention_mask_code(row.mask, row.past_len + len(row.new_ids))
            entry = transformer._index.forward(fmt.forward_key(hasher.hexdigest(), row.past_len, mask),
                                               fmt.history_forward_key(hasher.hexdigest(), mask))
            if entry is None:
                raise CassetteMiss(transformer._explain.forward(row.past_len, handle.ids + row.new_ids, mask))
            found.append((handle, row.new_ids, hasher, entry))
        logits = torch.cat([entry["logits"].step_logits(self.device) for *_, entry in found])
        for handle, new_ids, hasher, _ in found:  # the rows grow only once every row was found
            handle.append(new_ids, hasher)
        given.width += input_ids.shape[1]
        transformer._local.cache = None
        return MockCausalLMOutput(logits, given)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """Replay a recorded ``model.generate()`` call: the same arguments (a ``streamer`` aside) return
        what the live call returned, greedy or sampled; a repeated call replays its results in recorded
        order. A ``streamer`` gets the prompt, then each new token, then ``end()``, as from transformers."""
        call_args, call_kwargs = generate_call_args(args, kwargs)
        entry = self._transformer._index.generate(call_key(GENERATE_CALL, call_args, call_kwargs))
        if entry is None:
            raise CassetteMiss(self._transformer._explain.call(GENERATE_CALL, call_args, call_kwargs))
        result = decode_value(entry["out"])
        if isinstance(result, torch.Tensor):
            result = result.to(self.device)
        streamer = kwargs.get("streamer")
        if streamer is not None:
            _stream_replayed(streamer, args, kwargs, result)
        return result

    def __repr__(self) -> str:
        return f"MockModel({self._transformer.path}, device={self.device})"


def _stream_replayed(streamer: Any, args: tuple, kwargs: dict, result: Any) -> None:
    """Feed ``streamer`` as transformers' generate() does: the prompt ids, each new token, then ``end()``."""
    prompt = kwargs.get("input_ids", kwargs.get("inputs", args[0] if args else None))
    sequences = result if isinstance(result, torch.Tensor) else result.get("sequences")
    if isinstance(prompt, torch.Tensor) and isinstance(sequences, torch.Tensor):
        streamer.put(prompt.cpu())
        for token in sequences[0, prompt.shape[-1]:].tolist():
            streamer.put(torch.tensor([token]))
    streamer.end()


class MockTokenizer:
    """Answers the tokenizer calls the cassette recorded and carries the recorded tokenizer's attributes."""

    def __init__(self, transformer: MockTransformer) -> None:
        self._transformer = transformer
        self._memo: dict[tuple, Any] = {}  # hashable arguments -> recorded result (decode's hot path)
        info = transformer.manifest["tokenizer"]
        self._len = info.get("len")
        for name in ("name_or_path", "vocab_size", "chat_template", "model_max_length", "padding_side",
                     "truncation_side", "special_tokens_map", "all_special_ids", "all_special_tokens"):
            setattr(self, name, decode_value(info.get(name)))
        # only the known special-token names (the loader checks them too): a cassette key like `__class__`
        # or `_transformer` must never overwrite this object's own attributes
        ids = info.get("special_token_ids") or {}
        for name in fmt.SPECIAL_TOKEN_ID_NAMES:
            if name in ids:
                setattr(self, name, ids[name])
        for name in fmt.SPECIAL_TOKEN_NAMES:
            if name in (self.special_tokens_map or {}):
                setattr(self, name, self.special_tokens_map[name])
        for role in ("bos", "eos", "unk", "sep", "pad", "cls", "mask"):
            self.__dict__.setdefault(f"{role}_token", None)

    def __len__(self) -> int:
        return self._len

    def _replay(self, method: str, args: tuple, kwargs: dict) -> Any:
        fast = _fast_key(method, args, kwargs)
        out = self._memo.get(fast, _MISSING) if fast is not None else _MISSING
        if out is _MISSING:
            norm_args, norm_kwargs = normalize_arg(list(args)), normalize_arg(kwargs)
            out = self._transformer._index.calls.get(call_key(method, norm_args, norm_kwargs), _MISSING)
            if out is _MISSING:
                raise CassetteMiss(self._transformer._explain.call(method, norm_args, norm_kwargs))
            if fast is not None:
                self._memo[fast] = out
        return decode_value(out)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._replay("__call__", args, kwargs)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"MockTokenizer has no {name!r}: the cassette {self._transformer.path} records the tokenizer's "
            "calls and main attributes only. Use a real tokenizer for anything else."
        )

    def __repr__(self) -> str:
        return f"MockTokenizer({self._transformer.path})"


def _replaying(method: str) -> Any:
    def replayed(self: MockTokenizer, *args: Any, **kwargs: Any) -> Any:
        return self._replay(method, args, kwargs)

    replayed.__name__ = replayed.__qualname__ = method
    replayed.__doc__ = f"The recorded result of the tokenizer's ``{method}`` with these arguments."
    return replayed


for _method in RECORDED_TOKENIZER_METHODS:
    if _method != "__call__":
        setattr(MockTokenizer, _method, _replaying(_method))

_MISSING = object()
_KEY_SCALARS = (str, int, float, bool, type(None))


def _fast_key(method: str, args: tuple, kwargs: dict) -> tuple | None:
    """A memo key for a call with one positional argument (text or a list of ids) and scalar keywords.

    None (no memo) for anything else: a tensor, say, hashes by identity and could be edited in place.
    Types are part of the key because ``True == 1`` while their recorded JSON differs.
    """
    if len(args) != 1:
        return None
    arg = args[0]
    if type(arg) is list:
        arg = tuple(arg)
        if not all(type(i) is int for i in arg):
            return None
    elif type(arg) is not str:
        return None
    values = tuple(kwargs.values())
    if not all(type(v) in _KEY_SCALARS for v in values):
        return None
    return method, arg, tuple(kwargs), values, tuple(map(type, values))


@functools.lru_cache(maxsize=64)
def _plan(params: Any, vocab_size: int) -> tuple[list, str]:
    """The processors ``params`` asks for and the parameters' key part; processors keep no state."""
    return build_processors(params, vocab_size=vocab_size), fmt.canonical_json(params.to_dict())


class MockTokenSampler(TokenSampler):
    """Runs the real sampling processors on the replayed logits, then returns the recorded token.

    The processors (repetition penalty, temperature, top-k, top-p) run as in a live sampler, so a
    processor error shows in replay too; the random draw itself is replaced by the recorded token.
    """

    def __init__(self, transformer: MockTransformer) -> None:
        self._transformer = transformer
        self._last_plan: tuple = (None, None, None)  # (params, vocab size, _plan's result) of the last call

    def sample(self, logits: torch.Tensor, input_ids: torch.Tensor, params: Any,
               generator: torch.Generator | None = None) -> int:
        vocab_size = logits.shape[-1]
        last = self._last_plan  # a generation passes one params object every step: skip even the cache lookup
        if last[0] is params and last[1] == vocab_size:
            processors, params_json = last[2]
        else:
            try:  # SamplingParams is frozen: its plan is built once
                plan = _plan(params, vocab_size)
            except TypeError:  # unhashable params
                plan = _plan.__wrapped__(params, vocab_size)
            self._last_plan = (params, vocab_size, plan)
            processors, params_json = plan
        apply_processors(processors, input_ids, logits)
        seed = generator.initial_seed() if generator is not None else None
        entry = self._transformer._index.sample(fmt.sample_key(self._history_hash(input_ids), params_json, seed))
        if entry is None:
            raise CassetteMiss(self._transformer._explain.sample(input_ids[0].tolist(), params.to_dict(), seed))
        return entry["tok"]

    def _history_hash(self, input_ids: torch.Tensor) -> str:
        """The hash of ``input_ids``: the last forward's on this thread when they are its history, else computed."""
        cache = getattr(self._transformer._local, "cache", None)
        if cache is not None and input_ids.shape[0] == 1 and cache.holds(input_ids):
            return cache.hasher.hexdigest()
        return fmt.history_hash(input_ids[0])


class MockTransformer:
    """Replays the cassette ``parent_dir_path/dirname`` (parent default: ``$CHATSTREAM_PROBE_DIR`` or
    ``~/.cache/chatstream/probe_data``) through a mock model, tokenizer and token sampler.

    ``wait_sec`` is slept per forward, to emulate a GPU's pace. The whole cassette is loaded and
    checked here, so a damaged one fails at construction (CassetteNotFound / CassetteFormatError).
    """

    def __init__(self, parent_dir_path: str | os.PathLike | None = None, dirname: str | None = None,
                 wait_sec: float = 0) -> None:
        if dirname is None:
            raise ConfigurationError(
                "`dirname` (=None) must name the cassette directory under parent_dir_path; probe mode "
                "prints it when it starts, and it is a timestamp unless you chose one."
            )
        if isinstance(wait_sec, bool) or not isinstance(wait_sec, (int, float)) or not wait_sec >= 0:
            raise ConfigurationError(f"`wait_sec` (={wait_sec!r}) must be a number of seconds >= 0.")
        self.path = resolve_cassette_dir(parent_dir_path, dirname)
        self.wait_sec = wait_sec
        self.cassette = load_cassette_or_set(self.path)  # one cassette, or a replica set as one
        self.manifest = self.cassette.manifest
        self._index = _Index(self.cassette)
        self._local = threading.local()  # per thread: the MockCache of the last forward
        self._explain = MissExplainer(self.cassette)
        self._model = MockModel(self)
        self._tokenizer = MockTokenizer(self)
        self._token_sampler = MockTokenSampler(self)

    @classmethod
    def from_path(cls, path: str | os.PathLike, wait_sec: float = 0) -> MockTransformer:
        """Replay the cassette directory at ``path``."""
        path = Path(path)
        return cls(parent_dir_path=path.parent, dirname=path.name, wait_sec=wait_sec)

    def get_model(self) -> MockModel:
        return self._model

    def get_tokenizer(self) -> MockTokenizer:
        return self._tokenizer

    def get_token_sampler(self) -> MockTokenSampler:
        return self._token_sampler
