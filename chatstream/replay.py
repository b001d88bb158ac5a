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
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import torch

from . import cassette as fmt
from ._cassette_miss import MissExplainer
from ._cassette_values import call_key, decode_value, normalize_arg
from .exceptions import CassetteError, CassetteMiss, ConfigurationError
from .probe import resolve_cassette_dir
from .recording import RECORDED_TOKENIZER_METHODS
from .sampling import apply_processors, build_processors
from .token_sampler import TokenSampler


class _Index:
    """The cassette's forwards and samples by key, each key with a thread-safe replay cursor."""

    def __init__(self, cassette: fmt.Cassette) -> None:
        self._forwards: dict[str, list[dict]] = defaultdict(list)
        self._samples: dict[str, list[dict]] = defaultdict(list)
        for f in cassette.forwards():
            self._forwards[fmt.forward_key(f["h"], f["n"], f["m"])].append(f)
        for s in cassette.samples():
            self._samples[fmt.sample_key(s["h"], s["params"], s["seed"])].append(s)
        self.calls: dict[str, Any] = {}
        for c in cassette.calls():
            self.calls.setdefault(call_key(c["fn"], c["a"], c["kw"]), c["out"])
        self._cursors: dict[tuple[str, str], int] = defaultdict(int)
        self._lock = threading.Lock()

    def _take(self, kind: str, table: dict[str, list[dict]], key: str) -> dict | None:
        entries = table.get(key)
        if not entries:
            return None
        with self._lock:
            i = self._cursors[kind, key]
            self._cursors[kind, key] = i + 1
        return entries[min(i, len(entries) - 1)]

    def forward(self, key: str) -> dict | None:
        return self._take("forward", self._forwards, key)

    def sample(self, key: str) -> dict | None:
        return self._take("sample", self._samples, key)


class MockCache:
    """Stands in for a KV cache: it holds the token history instead of keys and values."""

    def __init__(self, ids: list[int] | None = None, hasher: fmt.HistoryHasher | None = None) -> None:
        self.ids = list(ids or [])
        self.hasher = hasher or fmt.HistoryHasher().extend(self.ids)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"MockCache(seq_length={len(self.ids)})"


class MockCausalLMOutput:
    """A forward's result: ``.logits`` (1, 1, vocab) and ``.past_key_values``, also by name or index.

    A plain class rather than transformers' ``CausalLMOutputWithPast``, whose construction costs
    more than the rest of a replayed step.
    """

    __slots__ = ("logits", "past_key_values")

    def __init__(self, logits: torch.Tensor, past_key_values: MockCache | None) -> None:
        self.logits = logits
        self.past_key_values = past_key_values

    def to_tuple(self) -> tuple:
        return tuple(v for v in (self.logits, self.past_key_values) if v is not None)

    def __getitem__(self, key: str | int) -> Any:
        return getattr(self, key) if isinstance(key, str) else self.to_tuple()[key]


def _device_of(args: tuple, kwargs: dict) -> torch.device | None:
    for value in (*args, kwargs.get("device")):
        if isinstance(value, (str, torch.device)) or (isinstance(value, int) and not isinstance(value, bool)):
            return torch.device(value)
        if isinstance(value, torch.Tensor):
            return value.device
    return None


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

    return GenerationConfig.from_dict(dict(data)) if data else GenerationConfig()


class MockModel:
    """Replays recorded forwards; to the runtime it looks like an HF causal LM in eval mode."""

    def __init__(self, transformer: MockTransformer) -> None:
        self._transformer = transformer
        info = transformer.manifest["model"]
        self.config = _rebuild_config(info.get("config"))
        self.generation_config = _rebuild_generation_config(info.get("generation_config"))
        self.name_or_path = info.get("name_or_path", "")
        self.dtype = getattr(torch, info.get("dtype", "float32"), torch.float32)
        self.device = torch.device("cpu")
        self.training = False
        self.recorded_on = info.get("device", {})

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
        past_key_values: Any = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> MockCausalLMOutput:
        if self._transformer.wait_sec:
            time.sleep(self._transformer.wait_sec)
        if input_ids is None or input_ids.dim() != 2 or input_ids.shape[0] != 1:
            shape = None if input_ids is None else tuple(input_ids.shape)
            raise CassetteError(f"the mock model replays forwards given input_ids of shape (1, n); got {shape}.")
        if past_key_values is None:
            prefix, hasher = [], fmt.HistoryHasher()
        elif isinstance(past_key_values, MockCache):
            prefix, hasher = past_key_values.ids, past_key_values.hasher
        elif getattr(past_key_values, "get_seq_length", lambda: None)() == 0:
            prefix, hasher = [], fmt.HistoryHasher()
        else:
            raise CassetteError(
                f"the mock model got a {type(past_key_values).__name__} as past_key_values; pass None or "
                "the MockCache its previous forward returned."
            )
        new_ids = input_ids[0].tolist()
        full = prefix + new_ids
        hasher = hasher.extend(new_ids)
        mask = fmt.attention_mask_code(attention_mask, len(full))
        entry = self._transformer._index.forward(fmt.forward_key(hasher.hexdigest(), len(prefix), mask))
        if entry is None:
            raise CassetteMiss(self._transformer._explain.forward(len(prefix), full, mask))
        logits = entry["logits"].full(self.device).unsqueeze(1)
        cache = None
        if use_cache is not False:
            if isinstance(past_key_values, MockCache):  # updated in place, as transformers' caches are
                past_key_values.ids, past_key_values.hasher = full, hasher
                cache = past_key_values
            else:
                cache = MockCache(full, hasher)
        return MockCausalLMOutput(logits, cache)

    def __repr__(self) -> str:
        return f"MockModel({self._transformer.path}, device={self.device})"


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
        for name, value in (info.get("special_token_ids") or {}).items():
            setattr(self, name, value)
        for name, value in (self.special_tokens_map or {}).items():
            setattr(self, name, value)
        for role in ("bos", "eos", "unk", "sep", "pad", "cls", "mask"):
            self.__dict__.setdefault(f"{role}_token", None)

    def __len__(self) -> int:
        return self._len

    def _replay(self, method: str, args: tuple, kwargs: dict) -> Any:
        fast = _fast_key(method, args, kwargs)
        try:
            out = self._memo.get(fast, _MISSING) if fast is not None else _MISSING
        except TypeError:  # an unhashable argument (a list of lists, a dict): no memo
            fast, out = None, _MISSING
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
        if name in RECORDED_TOKENIZER_METHODS:
            return lambda *args, **kwargs: self._replay(name, args, kwargs)
        raise AttributeError(
            f"MockTokenizer has no {name!r}: the cassette {self._transformer.path} records the tokenizer's "
            "calls and main attributes only. Use a real tokenizer for anything else."
        )

    def __repr__(self) -> str:
        return f"MockTokenizer({self._transformer.path})"


_MISSING = object()


def _fast_key(method: str, args: tuple, kwargs: dict) -> tuple | None:
    """A hashable memo key for a call with one positional argument (ids or text), or None."""
    if len(args) != 1:
        return None
    arg = args[0]
    return (method, tuple(arg) if type(arg) is list else arg, tuple(kwargs.items()),
            tuple(map(type, kwargs.values())))


@functools.lru_cache(maxsize=64)
def _params_dict(params: Any) -> dict:
    return params.to_dict()


@functools.lru_cache(maxsize=64)
def _processors(params: Any, vocab_size: int) -> list:
    return build_processors(params, vocab_size=vocab_size)  # processors keep no state: build them once


@functools.lru_cache(maxsize=256)
def _sample_key(history: str, params: Any, seed: int | None) -> str:
    return fmt.sample_key(history, _params_dict(params), seed)


class MockTokenSampler(TokenSampler):
    """Runs the real sampling processors on the replayed logits, then returns the recorded token.

    The processors (repetition penalty, temperature, top-k, top-p) run as in a live sampler, so a
    processor error shows in replay too; the random draw itself is replaced by the recorded token.
    """

    def __init__(self, transformer: MockTransformer) -> None:
        self._transformer = transformer

    def sample(self, logits: torch.Tensor, input_ids: torch.Tensor, params: Any,
               generator: torch.Generator | None = None) -> int:
        hashable = isinstance(params, Hashable)  # SamplingParams is frozen: its parts are computed once
        vocab_size = logits.shape[-1]
        processors = _processors(params, vocab_size) if hashable else build_processors(params, vocab_size)
        apply_processors(processors, input_ids, logits)
        seed = generator.initial_seed() if generator is not None else None
        history = fmt.history_hash(input_ids[0])
        key = _sample_key(history, params, seed) if hashable else fmt.sample_key(history, params.to_dict(), seed)
        entry = self._transformer._index.sample(key)
        if entry is None:
            raise CassetteMiss(self._transformer._explain.sample(input_ids[0].tolist(), params.to_dict(), seed))
        return entry["tok"]


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
        self.cassette = fmt.load_cassette(self.path)
        self.manifest = self.cassette.manifest
        self._index = _Index(self.cassette)
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
