"""The prefix cache: KV caches of earlier token histories, so a new request prefills only what is new.

A finished generation leaves its cache (the prompt and every token fed) here, keyed by those token
ids. A new request takes a private copy of the longest cached prefix of its prompt (cut to the length
it shares) and prefills only the rest. A stored entry is never shared: a stream decodes into its own
copy, or, when its prompt continues all of an entry (a session's next turn), into the entry itself,
which then leaves the cache; so no stream can write into a prefix another one reuses. docs/prefix-cache.md
describes the design.

What can be reused depends on the cache's layers:

- full-attention layers (transformers' ``DynamicLayer``) hold one position per token: any prefix can
  be cut from them (*croppable*);
- a sliding-window layer is croppable while it has dropped nothing (the history is shorter than its
  window); once it has, only the whole entry continues (a new prompt that extends all of its ids);
- linear-attention / state-space layers (mamba) hold a running state, which transformers' forwards
  (5.24) cannot continue over several new tokens with a full-history mask (mamba's masks the new
  positions only): such caches are not stored, and neither is a cache with other layers, or without
  layers; the reason is logged once.

A cache class of its own (the replay ``MockCache``) takes part by providing ``copy_prefix(n)`` and
``nbytes``. Probe mode tags a cache with the token history it holds (``HISTORY_TAG``); a copy of the
first n positions gets the tag's ``prefix(n)``, so a forward on the copy is still keyed by the whole
history it continues.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..exceptions import ConfigurationError
from .prefix_index import BlockIndex, block_chain

HISTORY_TAG = "_chatstream_probe_history"
"""The attribute probe mode's recorder tags a cache with (the token history it holds)."""

_logger = logging.getLogger("chatstream")
_MB = 1024 * 1024
DEFAULT_CPU_MB = 512
DEFAULT_GPU_FRACTION = 0.1  # of the device's memory, at most DEFAULT_GPU_MAX_MB
DEFAULT_GPU_MAX_MB = 4096

_CROPPABLE, _WHOLE = "croppable", "whole"


def default_prefix_cache_mb(device: torch.device | str | None) -> int:
    """The budget used when none is given: 512 MiB on CPU; a tenth of a GPU's memory, at most 4 GiB."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(device).total_memory
        return int(min(DEFAULT_GPU_MAX_MB, DEFAULT_GPU_FRACTION * total / _MB))
    return DEFAULT_CPU_MB


def check_prefix_cache_mb(value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
        raise ConfigurationError(f"`prefix_cache_mb` (={value!r}) must be a number of MiB >= 0 (0 turns the "
                                 "prefix cache off), or None for the device's default.")


@dataclass(frozen=True)
class PrefixCacheStats:
    """Counts since construction, and what is held now."""

    hits: int = 0  # requests that reused a cached prefix
    misses: int = 0
    reused_tokens: int = 0  # prompt tokens taken from the cache
    computed_tokens: int = 0  # prompt tokens prefilled
    evictions: int = 0
    bytes: int = 0  # held now
    entries: int = 0
    budget_bytes: int = 0


class _Entry:
    """``source``: None for a stored entry; for a live one (``store_live``), what copies the first n positions of
    the running stream's cache (``cache`` is then None and ``nbytes`` 0: it holds nothing of its own)."""

    __slots__ = ("cache", "chain", "ids", "kind", "nbytes", "source")

    def __init__(self, ids: np.ndarray, chain: list[int], cache: Any, kind: str, nbytes: int,
                 source: Callable[[int], Any] | None = None) -> None:
        self.ids, self.chain, self.cache, self.kind, self.nbytes = ids, chain, cache, kind, nbytes
        self.source = source


def _layer_kind(layer: Any) -> str | None:
    """How a layer can be reused (``_CROPPABLE``, ``_WHOLE``) or None when it cannot be copied safely."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    kind = type(layer)
    if kind is DynamicLayer:
        return _CROPPABLE
    if kind is DynamicSlidingWindowLayer:
        held = layer.keys.shape[-2] if getattr(layer, "is_initialized", False) else 0
        return _CROPPABLE if held == getattr(layer, "cumulative_length", held) else _WHOLE
    return None


def _reuse_kind(cache: Any) -> tuple[str | None, str]:
    """(kind, why not) for a whole cache: croppable only if every layer is."""
    if callable(getattr(cache, "copy_prefix", None)):
        return _CROPPABLE, ""
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list) or not layers:
        return None, f"a {type(cache).__name__} has no cache layers to copy"
    kinds = [_layer_kind(layer) for layer in layers]
    if None in kinds:
        odd = sorted({type(layer).__name__ for layer, kind in zip(layers, kinds, strict=True) if kind is None})
        if any("LinearAttention" in name for name in odd):
            return None, (f"its {', '.join(odd)} cache layers hold a running (state-space) state, which a forward "
                          "cannot continue over a multi-token prompt suffix")
        return None, f"its {', '.join(odd)} cache layers cannot be cut or copied safely"
    return (_CROPPABLE if all(k == _CROPPABLE for k in kinds) else _WHOLE), ""


def _append_only(cache: Any) -> bool:
    """Whether decoding on from ``cache`` never rewrites a position it holds: every layer a full-attention
    ``DynamicLayer`` (a sliding-window layer drops its oldest positions; other caches are not known to). A cache
    class of its own (the replay ``MockCache``) is copied at once, as before, and never imports transformers."""
    if callable(getattr(cache, "copy_prefix", None)):
        return False
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return isinstance(layers, list) and bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _nbytes(cache: Any) -> int:
    own = getattr(cache, "nbytes", None)
    if isinstance(own, int):
        return own
    return sum(value.nbytes for layer in cache.layers for value in vars(layer).values()
               if isinstance(value, torch.Tensor))


def copy_prefix(cache: Any, length: int, kind: str = _CROPPABLE) -> Any:
    """A new cache holding the first ``length`` positions of ``cache`` (its own tensors: ``cache`` is untouched).

    A ``_WHOLE`` cache is copied as it is (``length`` must then be all it holds)."""
    own = getattr(cache, "copy_prefix", None)
    if callable(own):
        return own(length)
    new = copy.copy(cache)
    layers = []
    for layer in cache.layers:
        copied = copy.copy(layer)
        for name, value in vars(layer).items():
            if isinstance(value, torch.Tensor) and value.dim() >= 2 and name in ("keys", "values") \
                    and kind == _CROPPABLE:
                setattr(copied, name, value[..., :length, :].clone())
            elif isinstance(value, torch.Tensor):
                setattr(copied, name, value.clone())
        if kind == _CROPPABLE and hasattr(copied, "cumulative_length"):
            copied.cumulative_length = length
        layers.append(copied)
    new.layers = layers
    tag = cache.__dict__.get(HISTORY_TAG)
    if tag is not None:
        new.__dict__[HISTORY_TAG] = tag.prefix(length)
    return new


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class PrefixCache:
    """Cached KV prefixes under a byte budget, least recently used evicted first. Thread-safe.

    ``take(ids)`` gives a private cache of the longest reusable prefix of ``ids`` (and its length);
    ``store(ids, cache)`` keeps a finished stream's cache (ownership passes here: the caller never
    touches it again).
    """

    def __init__(self, budget_mb: float) -> None:
        check_prefix_cache_mb(budget_mb)
        self.budget_bytes = int(budget_mb * _MB)
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # oldest use first
        self._index = BlockIndex()  # which entries share a prompt's leading blocks (prefix_index.py)
        self._next = 0
        self._lock = threading.Lock()
        self._bytes = 0
        self._counts = {"hits": 0, "misses": 0, "reused_tokens": 0, "computed_tokens": 0, "evictions": 0}
        self._refused: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    def take(self, ids: Sequence[int]) -> tuple[Any, int]:
        """(a new cache holding the first n ids, n) for the longest cached prefix, leaving at least one id to
        prefill; (None, 0) when nothing is cached for ``ids``. Counts the hit or miss and the tokens."""
        prompt = np.asarray(ids, dtype=np.int64)
        chain = block_chain(prompt)
        best, best_len = None, 0
        with self._lock:
            candidates = self._index.sharing(chain)  # None: no entry shares a whole block, so any may be best
            for key in self._entries if candidates is None else candidates:
                entry = self._entries[key]
                shared = _common_prefix(entry.ids, prompt)
                if entry.kind == _CROPPABLE:
                    usable = min(shared, len(prompt) - 1)
                else:
                    usable = len(entry.ids) if shared == len(entry.ids) < len(prompt) else 0
                if usable > best_len:
                    best, best_len = key, usable
            if best is None:
                self._counts["misses"] += 1
                self._counts["computed_tokens"] += len(prompt)
                return None, 0
            entry = self._entries[best]
            self._counts["hits"] += 1
            self._counts["reused_tokens"] += best_len
            self._counts["computed_tokens"] += len(prompt) - best_len
            if entry.source is not None:  # a live stream's prompt: copied now, on the thread that decodes it
                self._entries.move_to_end(best)
                return entry.source(best_len), best_len
            if best_len == len(entry.ids):
                # All of it continues (a session's next turn, the usual case): hand the entry itself over
                # instead of copying it. It leaves the cache, so no other stream can reach it; the stream
                # stores its longer history, which covers this one, when it finishes.
                self._drop(best)
                return entry.cache, best_len
            self._entries.move_to_end(best)
        # Outside the lock: an entry is never changed, and eviction only drops the reference.
        return copy_prefix(entry.cache, best_len, entry.kind), best_len

    def store(self, ids: Sequence[int] | torch.Tensor, cache: Any) -> None:
        """Keep ``cache``, which holds exactly ``ids``. Entries it covers (croppable prefixes of it) go;
        it is not kept when a croppable entry already covers it, or when it alone exceeds the budget."""
        admitted = self._admit(ids, cache)
        if admitted is not None:
            self._keep(*admitted, cache)

    def store_copy(self, ids: Sequence[int] | torch.Tensor, cache: Any) -> None:
        """Keep a copy of ``cache`` (which holds exactly ``ids``) while its stream decodes on into the original:
        a stream calls it once its prompt is prefilled, so requests that arrive while it is still decoding (the
        other choices of an ``n > 1`` request, sessions sharing a long system prompt) reuse the prompt.
        Nothing is copied when a croppable entry already covers ``ids``."""
        admitted = self._admit(ids, cache)
        if admitted is None:
            return
        held, chain, kind = admitted
        with self._lock:
            if self._covering(held, chain) is not None:
                return
        self._keep(held, chain, kind, copy_prefix(cache, len(held), kind))

    def store_live(self, ids: Sequence[int] | torch.Tensor, cache: Any, copy_first: Callable[[int], Any]) -> int | None:
        """Offer a running stream's prefilled prompt (``ids``, held by ``cache``) without copying it: requests that
        arrive while the stream decodes get ``copy_first(n)``, a copy of its first n positions, made when they
        take it. What ``store_copy`` does, paid only when someone reuses it (a session's next turn, which nobody
        else continues, then costs no copy). The key it returns goes to ``forget`` when the stream ends.

        Only for a cache whose positions decoding never rewrites (full-attention ``DynamicLayer`` layers; others
        get ``store_copy``'s copy now) and for an owner that takes and forgets on the thread that decodes the
        stream (the batching scheduler), so ``copy_first`` never reads a cache being updated."""
        if not self.enabled or not _append_only(cache):
            self.store_copy(ids, cache)
            return None
        admitted = self._admit(ids, cache)
        if admitted is None:
            return None
        held, chain, kind = admitted
        with self._lock:
            if self._covering(held, chain) is not None:
                return None
            return self._insert(_Entry(held, chain, None, kind, 0, copy_first))

    def forget(self, key: int | None) -> None:
        """The stream behind live entry ``key`` ended: nothing can copy from it any more."""
        if key is None:
            return
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.source is not None:
                self._drop(key)

    def _admit(self, ids: Sequence[int] | torch.Tensor, cache: Any) -> tuple[np.ndarray, list[int], str] | None:
        """(the ids as int64, their block chain, the cache's reuse kind), or None when nothing is to be stored
        (the reason logged once for a cache that cannot be reused)."""
        if not self.enabled or cache is None or len(ids) == 0:
            return None
        kind, why = _reuse_kind(cache)
        if kind is None:
            self._refuse_once(why)
            return None
        held = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64).reshape(-1).copy()
        return held, block_chain(held), kind

    def _covering(self, held: np.ndarray, chain: list[int]) -> int | None:
        """The key of a stored croppable entry whose ids start with ``held`` (under the lock), if any (a live one
        may end without leaving its cache)."""
        for key in self._index.sharing_all(chain) if chain else self._entries:
            entry = self._entries[key]
            if entry.kind == _CROPPABLE and entry.source is None and len(entry.ids) >= len(held) \
                    and _common_prefix(entry.ids, held) == len(held):
                return key
        return None

    def _keep(self, held: np.ndarray, chain: list[int], kind: str, cache: Any) -> None:
        nbytes = _nbytes(cache)
        if nbytes > self.budget_bytes:
            return
        with self._lock:
            covering = self._covering(held, chain)
            if covering is not None:
                self._entries.move_to_end(covering)  # already covered
                return
            for key in self._index.prefixes(chain):
                entry = self._entries[key]
                if _common_prefix(entry.ids, held) == len(entry.ids) \
                        and (kind == _CROPPABLE or len(entry.ids) == len(held)):
                    self._drop(key)  # the new entry covers it
            while self._bytes + nbytes > self.budget_bytes and self._entries:
                self._drop(next(iter(self._entries)))
                self._counts["evictions"] += 1
            self._insert(_Entry(held, chain, cache, kind, nbytes))

    def _insert(self, entry: _Entry) -> int:
        """File ``entry`` under a new key (under the lock): the most recently used, in the index, its bytes counted."""
        key = self._next
        self._next += 1
        self._entries[key] = entry
        self._index.add(key, entry.chain)
        self._bytes += entry.nbytes
        return key

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._index = BlockIndex()
            self._bytes = 0

    @property
    def stats(self) -> PrefixCacheStats:
        with self._lock:
            return PrefixCacheStats(**self._counts, bytes=self._bytes, entries=len(self._entries),
                                    budget_bytes=self.budget_bytes)

    def _drop(self, key: int) -> None:
        entry = self._entries.pop(key)
        self._index.remove(key, entry.chain)
        self._bytes -= entry.nbytes

    def _refuse_once(self, why: str) -> None:
        with self._lock:
            if why in self._refused:
                return
            self._refused.add(why)
        _logger.info("prefix cache: not caching this model's KV cache (%s); every request prefills its whole "
                     "prompt", why)


def make_prefix_cache(prefix_cache_mb: float | None, device: torch.device) -> PrefixCache:
    """The prefix cache of a generator: ``prefix_cache_mb`` MiB (None: the device's default, 0: off)."""
    check_prefix_cache_mb(prefix_cache_mb)
    return PrefixCache(default_prefix_cache_mb(device) if prefix_cache_mb is None else prefix_cache_mb)
