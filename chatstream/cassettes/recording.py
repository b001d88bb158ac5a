"""Probe mode: recording proxies around a model, a tokenizer and a token sampler, and the recorder.

Each proxy behaves like the object it wraps (same results, attributes passed through, ``isinstance``
answers as for the wrapped object) and reports what passes through to a ``ProbeRecorder``, which
writes it into a cassette directory, one segment per ``flush()``.

A model forward is keyed by the whole token history it continues: the proxy tags the cache object a
forward returns with that history, so the next forward given that cache knows its prefix. A sampler
call is keyed by the history it got, the sampling parameters and the generator's seed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from ..engine.batch_rows import ROWS_ATTR, Row, split_rows
from ..engine.generation import accepts_logits_to_keep
from ..engine.model_cache import cache_kwargs, cache_length, decode_attention_mask, output_cache
from ..engine.prefix_cache import HISTORY_TAG
from ..engine.token_sampler import TokenSamplerIsok
from ..exceptions import CassetteError, ConfigurationError
from . import cassette as fmt
from ._cassette_manifest import build_manifest
from ._cassette_values import GENERATE_CALL, encode_value, generate_call_args, normalize_arg
from ._cassette_values import RECORDED_TOKENIZER_METHODS as RECORDED_TOKENIZER_METHODS  # re-exported

CACHE_TAG = HISTORY_TAG  # the prefix cache gives a copy of a tagged cache its own, cut tag
_logger = logging.getLogger("chatstream")
_RETURNS_SELF_ON_MODEL = ("to", "cuda", "cpu", "eval", "train", "half", "float", "bfloat16", "requires_grad_")


class _Proxy:
    """Passes attribute reads and writes through to the wrapped object."""

    __slots__ = ("_recorder", "_target")

    def __init__(self, target: Any, recorder: ProbeRecorder) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_recorder", recorder)

    @property
    def __class__(self) -> type:  # isinstance() sees the wrapped object's class, as with wrapt's proxies
        return type(object.__getattribute__(self, "_target"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._target, name)

    def __dir__(self) -> list[str]:
        return dir(self._target)

    def __repr__(self) -> str:
        return f"<recording {self._target!r}>"


class RecordingModel(_Proxy):
    """A model whose forwards (input ids, attention mask, the last position's logits) are recorded."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._recorder._forward(self._target, args, kwargs)

    @property
    def forward(self) -> Any:
        real = self._target.forward

        @functools.wraps(real)  # keeps the signature (the decode loop looks for `logits_to_keep`)
        def forward(*args: Any, **kwargs: Any) -> Any:
            return self._recorder._forward(real, args, kwargs)

        return forward

    @property
    def chatstream_decode_mask(self) -> bool:
        """Whether decode steps take the whole-history attention mask: found on the real model, unrecorded."""
        return decode_attention_mask(self._target)

    @property
    def generate(self) -> Any:
        """The model's ``generate()``, recorded: its result, and the forwards it runs (batch size 1)."""
        real = self._target.generate

        @functools.wraps(real)
        def generate(*args: Any, **kwargs: Any) -> Any:
            return self._recorder._generate(self._target, real, args, kwargs)

        return generate

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name in _RETURNS_SELF_ON_MODEL and callable(value):

            @functools.wraps(value)
            def keep_proxy(*args: Any, **kwargs: Any) -> Any:
                result = value(*args, **kwargs)
                return self if result is self._target else result

            return keep_proxy
        return value


class RecordingTokenizer(_Proxy):
    """A tokenizer whose encode / ``__call__`` / ``apply_chat_template`` / decode calls are recorded."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self._target(*args, **kwargs)
        self._recorder._tokenizer_call("__call__", args, kwargs, result)
        return result

    def __len__(self) -> int:
        return len(self._target)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name in RECORDED_TOKENIZER_METHODS and callable(value):

            @functools.wraps(value)
            def recorded(*args: Any, **kwargs: Any) -> Any:
                result = value(*args, **kwargs)
                self._recorder._tokenizer_call(name, args, kwargs, result)
                return result

            return recorded
        return value


class RecordingTokenSampler(_Proxy):
    """A token sampler whose calls (logits, history, parameters, the token returned) are recorded."""

    __slots__ = ()

    def sample(self, logits: torch.Tensor, input_ids: torch.Tensor, params: Any,
               generator: torch.Generator | None = None) -> int:
        token = self._target.sample(logits, input_ids, params, generator)
        self._recorder._sample(logits, input_ids, params, generator, token)
        return token


def _params_dict(params: Any) -> dict:
    to_dict = getattr(params, "to_dict", None)
    return dict(to_dict()) if callable(to_dict) else dict(vars(params))


class ProbeRecorder:
    """Records what passes through wrapped objects into ``cassette_dir`` (see docs/cassette-format.md).

    ``fidelity`` is "compact" (default: top 64 logits in fp16 plus the sampled token's), "fp16" or
    "exact". ``flush()`` writes what was recorded since the last flush as one crash-safe segment and
    may be called from any thread; ``close()`` flushes and stops recording. The directory must not
    already hold a cassette.
    """

    def __init__(self, cassette_dir: str | Path, fidelity: str = fmt.DEFAULT_FIDELITY,
                 sampling: dict | None = None, extra_metadata: dict | None = None) -> None:
        if fidelity not in fmt.FIDELITIES:
            raise ConfigurationError(
                f"`fidelity` (={fidelity!r}) must be one of {', '.join(map(repr, fmt.FIDELITIES))}; "
                f"{fmt.DEFAULT_FIDELITY!r} keeps cassettes small enough for git."
            )
        self.path = Path(cassette_dir)
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise CassetteError(
                f"{self.path} already exists and is not an empty directory; remove it or record into a "
                "new directory (a cassette is never appended to)."
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self.fidelity = fidelity
        self.sampling = sampling
        self.extra_metadata = extra_metadata
        self.bytes_written = 0
        self.segments_written = 0
        self.closed = False
        self._wrapped = False
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._local = threading.local()
        self._seq = 0
        self._next_segment = 1
        self._forwards: list[dict] = []
        self._samples: list[dict] = []
        self._calls: list[dict] = []
        self._seen_calls: set[bytes] = set()
        self.last_error: str | None = None  # why the last flush failed (None once one succeeds)

    def __enter__(self) -> ProbeRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wrap(self, model: Any, tokenizer: Any, token_sampler: Any = None) -> tuple[Any, Any, Any]:
        """Return recording proxies for the three objects and write the manifest.

        ``token_sampler`` None wraps a new ``TokenSamplerIsok`` (what ChatGenerator would use).
        """
        if self._wrapped:
            raise CassetteError(f"this ProbeRecorder ({self.path}) already wraps a model; make one per cassette.")
        self._wrapped = True
        if token_sampler is None:
            token_sampler = TokenSamplerIsok(seed=(self.sampling or {}).get("seed"))

        manifest = build_manifest(model, tokenizer, token_sampler, self.fidelity, self.sampling,
                                  self.extra_metadata,
                                  forward_accepts_logits_to_keep=accepts_logits_to_keep(model))
        # How the recorded decode steps were masked, so that replay asks for the forwards it recorded.
        manifest["model"]["decode_attention_mask"] = decode_attention_mask(model)
        with self._lock:
            self.bytes_written += fmt.write_manifest(self.path, manifest)
        return (RecordingModel(model, self), RecordingTokenizer(tokenizer, self),
                RecordingTokenSampler(token_sampler, self))

    # -- what the proxies report -------------------------------------------------------------------------

    def _forward(self, call: Any, args: tuple, kwargs: dict) -> Any:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None or self.closed:
            return call(*args, **kwargs)  # inputs_embeds cannot be keyed by ids; nothing to record
        if input_ids.dim() != 2:
            raise CassetteError(f"probe mode records input_ids shaped (batch, n); got {tuple(input_ids.shape)}.")
        if input_ids.shape[0] != 1:
            return self._forward_rows(call, args, kwargs, input_ids)
        past = cache_kwargs(kwargs)  # the decode loop passes it by keyword, under either name
        prefix = self._prefix_of(past)
        output = call(*args, **kwargs)
        if prefix is None:
            return output
        new_ids = input_ids[0].tolist()
        hasher = prefix.hasher.extend(new_ids)
        entry = {"h": hasher.hexdigest(), "n": len(prefix), "ids": new_ids}
        if len(prefix):
            entry["ph"] = prefix.hasher.hexdigest()
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        entry["m"] = fmt.attention_mask_code(mask, len(prefix) + len(new_ids))
        logits = output.logits if hasattr(output, "logits") else output[0]
        last = logits[:, -1, :]
        entry["logits"] = fmt.encode_logits(last[0], self.fidelity)
        cache = output_cache(output)
        history = None
        if cache is not None and cache is past and getattr(past, CACHE_TAG, None) is prefix:
            history = prefix  # the cache was updated in place (transformers' Cache classes): so is its tag
            history.append(new_ids, hasher)
        elif cache is not None:
            history = fmt.TokenHistory(prefix.ids + new_ids, hasher)
            try:
                setattr(cache, CACHE_TAG, history)
            except (AttributeError, TypeError):
                history = None
                warnings.warn(f"probe mode cannot tag a {type(cache).__name__} cache; later steps of this "
                              "generation are not recorded", RuntimeWarning, stacklevel=3)
        if self._keep("_forwards", entry):
            # `last` is held so that its address cannot be reused by another tensor meanwhile.
            self._local.last_forwards = {last.data_ptr(): (entry, last, history)}
        return output

    def _forward_rows(self, call: Any, args: tuple, kwargs: dict, input_ids: torch.Tensor) -> Any:
        """A batched forward (the batching engine's), recorded row by row as each row's unbatched forward.

        Each row is keyed by its own unpadded history, found through the row handles the batched cache
        carries (``chatstream.engine.batch_rows``); its mask code is that of its mask without the padding.
        """
        past = cache_kwargs(kwargs)
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        rows = split_rows(input_ids, mask, past)
        if rows is None:
            raise CassetteError(
                f"probe mode records a batched forward (input_ids {tuple(input_ids.shape)}) only when its cache "
                f"lists each row's own cache in `{ROWS_ATTR}` (chatstream.engine.batching does); run other batched "
                "calls on the unwrapped model."
            )
        prefixes = [self._row_prefix(row) for row in rows]
        output = call(*args, **kwargs)
        logits = output.logits if hasattr(output, "logits") else output[0]
        last_forwards = {}
        for i, (row, prefix) in enumerate(zip(rows, prefixes, strict=True)):
            if prefix is None:
                continue
            hasher = prefix.hasher.extend(row.new_ids)
            entry = {"h": hasher.hexdigest(), "n": len(prefix), "ids": row.new_ids}
            if len(prefix):
                entry["ph"] = prefix.hasher.hexdigest()
            entry["m"] = fmt.attention_mask_code(row.mask, len(prefix) + len(row.new_ids))
            last = logits[i : i + 1, -1, :]
            entry["logits"] = fmt.encode_logits(last[0], self.fidelity)
            prefix.append(row.new_ids, hasher)  # the row's cache grows by these ids: so does its tag
            if self._keep("_forwards", entry):
                last_forwards[last.data_ptr()] = (entry, last, prefix)
        self._local.last_forwards = last_forwards
        return output

    def _row_prefix(self, row: Row) -> fmt.TokenHistory | None:
        """The history a batched row continues (its handle's tag), or None (with a warning) when unknown."""
        tag = getattr(row.handle, CACHE_TAG, None)
        if isinstance(tag, fmt.TokenHistory) and len(tag) == row.past_len:
            return tag
        warnings.warn(f"probe mode got a batched row whose cache ({type(row.handle).__name__}) it did not see "
                      f"filled with {row.past_len} positions; this row's forward is not recorded", RuntimeWarning,
                      stacklevel=4)
        return None

    def _generate(self, model: Any, generate: Any, args: tuple, kwargs: dict) -> Any:
        """Run ``model.generate()`` with its forwards recorded on this thread (batch size 1), then record
        the call and its result; ``MockModel.generate`` replays the result."""
        input_ids = kwargs.get("input_ids", kwargs.get("inputs", args[0] if args else None))
        record_forwards = isinstance(input_ids, torch.Tensor) and input_ids.dim() == 2 and input_ids.shape[0] == 1
        if record_forwards:
            self._route_forwards(model)
        depth = getattr(self._local, "generating", 0)
        self._local.generating = depth + (1 if record_forwards else 0)
        try:
            result = generate(*args, **kwargs)
        finally:
            self._local.generating = depth
        if not self.closed:
            call_args, call_kwargs = generate_call_args(args, kwargs)
            self._keep("_calls", {"fn": GENERATE_CALL, "a": call_args, "kw": call_kwargs, "out": encode_value(result)})
        return result

    def _route_forwards(self, model: Any) -> None:
        """Make ``model.forward`` (an instance attribute, what ``generate`` reaches through ``model(...)``)
        record the forwards of this recorder's ``generate`` calls; other calls pass straight through."""
        if getattr(model.forward, "_chatstream_recorder", None) is self:
            return
        real = model.forward

        @functools.wraps(real)  # keeps the signature the decode loop reads
        def forward(*args: Any, **kwargs: Any) -> Any:
            if getattr(self._local, "generating", 0):
                return self._forward(real, args, kwargs)
            return real(*args, **kwargs)

        forward._chatstream_recorder = self
        model.forward = forward

    def _prefix_of(self, past: Any) -> fmt.TokenHistory | None:
        """The history a cache holds, or None (with a warning) when it is a cache probe mode never saw."""
        if past is None:
            return fmt.TokenHistory()
        length = cache_length(past)
        tag = getattr(past, CACHE_TAG, None)
        if isinstance(tag, fmt.TokenHistory):
            if length is None or length >= len(tag):  # (a state-space cache may count more than its positions)
                return tag
            return fmt.TokenHistory(tag.ids[:length])  # the cache was cropped
        if length == 0:
            return fmt.TokenHistory()
        warnings.warn(f"probe mode got a {type(past).__name__} cache it did not see filled; this forward is "
                      "not recorded", RuntimeWarning, stacklevel=4)
        return None

    def _sample(self, logits: torch.Tensor, input_ids: torch.Tensor, params: Any,
                generator: torch.Generator | None, token: int) -> None:
        if self.closed:
            return
        forwards = getattr(self._local, "last_forwards", None) or {}
        forward, last, history = forwards.get(logits.data_ptr(), (None, None, None))
        if history is not None and input_ids.shape[0] == 1 and history.holds(input_ids):
            history_hash = history.hasher.hexdigest()  # the history of the forward it follows (checked)
        else:
            history_hash = fmt.history_hash(input_ids[0])
        entry: dict[str, Any] = {
            "h": history_hash, "n": int(input_ids.shape[-1]), "params": _params_dict(params),
            "seed": generator.initial_seed() if generator is not None else None, "tok": int(token),
        }
        if forward is not None and logits.data_ptr() == last.data_ptr() and logits.shape == last.shape:
            entry["lf"] = forward["s"]
            stored = forward["logits"]
            if stored.indices is not None and not bool((stored.indices == token).any()):
                entry["x"] = [int(token), float(logits[0, token].to(torch.float16))]
        else:  # the sampler got logits that are not a forward's last position: keep them too
            stored = fmt.encode_logits(logits[0], self.fidelity)
            if stored.indices is not None and not bool((stored.indices == token).any()):
                stored.extra[int(token)] = float(logits[0, token].to(torch.float16))
            entry["logits"] = stored
        self._keep("_samples", entry)

    def _tokenizer_call(self, method: str, args: tuple, kwargs: dict, result: Any) -> None:
        if self.closed:
            return
        entry = {"fn": method, "a": normalize_arg(list(args)), "kw": normalize_arg(kwargs),
                 "out": encode_value(result)}
        # A tokenizer is deterministic: keep each distinct call once (remembered by a 16-byte digest).
        seen = hashlib.blake2b(fmt.canonical_json(entry).encode(), digest_size=16).digest()
        self._keep("_calls", entry, seen)

    def _keep(self, queue: str, entry: dict, seen: bytes | None = None) -> bool:
        """Number ``entry`` and queue it for the next flush; False once closed (after the final flush)."""
        with self._lock:
            if self.closed or (seen is not None and seen in self._seen_calls):
                return False
            if seen is not None:
                self._seen_calls.add(seen)
            self._seq += 1
            entry["s"] = self._seq
            getattr(self, queue).append(entry)
            return True

    # -- writing -------------------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write everything recorded since the last flush as one segment; returns its size in bytes.

        When the write fails (a full disk...), nothing is lost: the batch goes back to the front of the
        queue and the next flush writes it with what came since; the failure is logged once (until a
        flush succeeds again), kept in ``stats["error"]``, and 0 is returned.
        """
        with self._flush_lock:  # one flush at a time: a failed batch is back in the queue before the next
            with self._lock:
                forwards, samples, calls = self._forwards, self._samples, self._calls
                if not (forwards or samples or calls):
                    return 0
                self._forwards, self._samples, self._calls = [], [], []
                number = self._next_segment
            try:
                written = self._write(number, forwards, samples, calls)
            except OSError as error:
                with self._lock:
                    self._forwards = forwards + self._forwards
                    self._samples = samples + self._samples
                    self._calls = calls + self._calls
                    first = self.last_error is None
                    self.last_error = f"{type(error).__name__}: {error}"
                if first:
                    _logger.warning("probe mode could not write %s (%s); what was recorded is kept and written "
                                    "at the next flush", self.path, self.last_error)
                return 0
            with self._lock:
                self._next_segment += 1
                self.bytes_written += written
                self.segments_written += 1
                if self.last_error is not None:
                    _logger.warning("probe mode writes %s again", self.path)
                self.last_error = None
            return written

    def _write(self, number: int, forwards: list[dict], samples: list[dict], calls: list[dict]) -> int:
        packer = fmt.TensorPacker()
        params_index: dict[str, int] = {}
        params: list[dict] = []
        out_forwards = []
        for entry in forwards:
            out = {k: v for k, v in entry.items() if k != "logits"}
            out["lg"] = packer.add(entry["logits"])
            out_forwards.append(out)
        out_samples = []
        for entry in samples:
            key = fmt.canonical_json(entry["params"])
            if key not in params_index:
                params_index[key] = len(params)
                params.append(entry["params"])
            out = {k: v for k, v in entry.items() if k not in ("params", "logits")}
            out["p"] = params_index[key]
            if "logits" in entry:
                out["lg"] = packer.add(entry["logits"])
            out_samples.append(out)
        kwargs_index: dict[str, int] = {}
        out_calls = []
        for entry in calls:  # decode calls repeat the same keyword arguments: keep them once per segment
            key = fmt.canonical_json(entry["kw"])
            out = {k: v for k, v in entry.items() if k != "kw"}
            out["k"] = kwargs_index.setdefault(key, len(kwargs_index))
            out_calls.append(out)
        kwargs_table = [json.loads(k) for k in kwargs_index]
        body = {"params": params, "kwargs": kwargs_table, "forwards": out_forwards, "samples": out_samples,
                "calls": out_calls}
        return fmt.write_segment(self.path, number, body, packer)

    def close(self) -> None:
        """Flush and stop recording; the proxies keep working and record nothing more."""
        with self._lock:  # a call recorded after this lock is dropped, not left out of a written segment
            if self.closed:
                return
            self.closed = True
        self.flush()

    @property
    def stats(self) -> dict:
        """Counts for reports: segments and bytes written, entries waiting for the next flush."""
        with self._lock:
            return {"path": str(self.path), "segments": self.segments_written, "bytes": self.bytes_written,
                    "pending": len(self._forwards) + len(self._samples) + len(self._calls),
                    "error": self.last_error}
