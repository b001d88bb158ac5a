"""The cassette format: a directory of ``manifest.json`` plus committed segments (safetensors + JSON).

docs/cassette-format.md describes the format for readers outside Python. This module writes and
reads it: fidelity encoding of logits, crash-safe segment writes (temporary file, fsync,
``os.replace``; the segment's JSON is renamed last and is its commit marker) and strict loading
that names the file and the problem, building nothing until every file has been checked.
Only ``json`` and ``safetensors`` are used; nothing is pickled. The content addresses (history
hashes, forward and sample keys) live in ``_cassette_values`` and are re-exported here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ..exceptions import CassetteFormatError, CassetteNotFound
from ._cassette_places import DEFAULT_FIDELITY as DEFAULT_FIDELITY  # the fidelity names, re-exported here
from ._cassette_places import FIDELITIES as FIDELITIES
from ._cassette_values import HistoryHasher as HistoryHasher  # the content addresses, re-exported here
from ._cassette_values import TokenHistory as TokenHistory
from ._cassette_values import attention_mask_code as attention_mask_code
from ._cassette_values import canonical_json as canonical_json
from ._cassette_values import forward_key as forward_key
from ._cassette_values import history_forward_key as history_forward_key
from ._cassette_values import history_hash as history_hash
from ._cassette_values import recorded_output_problem
from ._cassette_values import sample_key as sample_key

FORMAT_VERSION = 2
# Version 2 (issue 19) adds, to a segment's sampling params, `constraint` (the key of the stream's decoding
# constraint) and `logit_bias`; only segments that use them are written as version 2, so other cassettes
# (the manifest, every segment without them) stay version 1 and older chatstream releases still read them.
CONSTRAINED_FORMAT_VERSION = 2
PLAIN_FORMAT_VERSION = 1
COMPACT_TOP_K = 64
MANIFEST_NAME = "manifest.json"
SEGMENT_PREFIX = "segment-"
RERECORD_HINT = (
    "re-record it with `pytest --probe` (plugin-managed cassettes) or by running the live model with "
    "ChatStream(probe_mode_enabled=True) / chatstream.ProbeRecorder"
)

_DTYPES = {str(t).removeprefix("torch."): t for t in (torch.float64, torch.float32, torch.float16, torch.bfloat16)}
# Bounds the loader checks before it reads or allocates anything (a cassette may come from anywhere).
MAX_JSON_BYTES = 256 * 1024 * 1024  # the manifest and each segment's JSON
MAX_TENSOR_BYTES = 16 * 1024 * 1024 * 1024  # each segment's safetensors file
MAX_JSON_DEPTH = 64  # nesting of any JSON value (recorded tokenizer results are a few levels deep)
MAX_VOCAB = 1 << 24  # a vocabulary (logits row width): 16.7M, far above any real model's
# dtypes a recorded tensor or array (in tokenizer results) may have
_VALUE_DTYPES = {"float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"}
_ROLES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
SPECIAL_TOKEN_NAMES = (*(f"{role}_token" for role in _ROLES), "additional_special_tokens")
SPECIAL_TOKEN_ID_NAMES = tuple(f"{role}_token_id" for role in _ROLES)


# -- logits at a fidelity ----------------------------------------------------------------------------


@dataclass
class StoredLogits:
    """One row of logits as a cassette keeps it; ``full()`` rebuilds the (1, vocab) tensor."""

    fidelity: str
    dtype: torch.dtype
    vocab: int
    values: torch.Tensor  # (vocab,) for exact / fp16, (k,) fp16 for compact
    indices: torch.Tensor | None = None  # (k,) int32 for compact
    extra: dict[int, float] = field(default_factory=dict)  # compact: logits kept outside the top k
    _parts: tuple | None = field(default=None, repr=False, compare=False)  # full()'s scatter, built once

    def full(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The logits as a fresh (1, vocab) tensor in the recorded dtype; compact fills the rest with -inf."""
        return self.step_logits(device)[0]

    def step_logits(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The logits as a fresh (1, 1, vocab) tensor: what a causal LM returns for one kept position."""
        if self.indices is None:
            return self.values.to(device=device, dtype=self.dtype, copy=True).view(1, 1, -1)
        if not isinstance(device, torch.device):
            device = torch.device(device) if device is not None else torch.device("cpu")
        parts = self._parts
        if parts is None or parts[2] != len(self.extra) or parts[3] != device:
            indices, values = self.indices.long(), self.values.to(self.dtype)
            if self.extra:
                indices = torch.cat([indices, torch.tensor(list(self.extra), dtype=torch.long)])
                values = torch.cat([values, torch.tensor(list(self.extra.values()), dtype=self.dtype)])
            parts = self._parts = (indices.view(1, 1, -1).to(device), values.view(1, 1, -1).to(device),
                                   len(self.extra), device)
        return _minus_inf_row(self.vocab, self.dtype, device).scatter(2, parts[0], parts[1])

    def known_mask(self) -> torch.Tensor:
        """True where this record holds a value (everywhere except outside compact's top k)."""
        if self.indices is None:
            return torch.ones(self.vocab, dtype=torch.bool)
        mask = torch.zeros(self.vocab, dtype=torch.bool)
        mask[self.indices.long()] = True
        mask[list(self.extra)] = True
        return mask

    def value_at(self, index: int) -> float | None:
        if self.indices is None:
            return float(self.values[index])
        hits = (self.indices == index).nonzero()
        if len(hits):
            return float(self.values[int(hits[0, 0])])
        return self.extra.get(index)


_MINUS_INF_ROWS: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def _minus_inf_row(vocab: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A shared, never written (1, 1, vocab) row of -inf: compact rows are scattered into copies of it."""
    key = (vocab, dtype, device)
    row = _MINUS_INF_ROWS.get(key)
    if row is None:
        row = _MINUS_INF_ROWS.setdefault(key, torch.full((1, 1, vocab), -math.inf, dtype=dtype, device=device))
    return row


def encode_logits(row: torch.Tensor, fidelity: str) -> StoredLogits:
    """Keep a (vocab,) row of logits at ``fidelity``; the result holds CPU tensors only."""
    row = row.detach()
    vocab = int(row.shape[-1])
    if fidelity == "exact":
        return StoredLogits("exact", row.dtype, vocab, row.to("cpu", copy=True))
    if fidelity == "fp16":
        return StoredLogits("fp16", row.dtype, vocab, row.to("cpu", torch.float16))
    if fidelity == "compact":
        top = torch.topk(row, min(COMPACT_TOP_K, vocab), sorted=True)
        return StoredLogits(
            "compact", row.dtype, vocab, top.values.to("cpu", torch.float16), top.indices.to("cpu", torch.int32)
        )
    raise ValueError(f"`fidelity` (={fidelity!r}) must be one of {', '.join(map(repr, FIDELITIES))}.")


class TensorPacker:
    """Stacks the logits rows of one segment into a few tensors, one group per (fidelity, dtype, vocab, k)."""

    def __init__(self) -> None:
        self.groups: dict[str, dict] = {}
        self._rows: dict[str, list[StoredLogits]] = {}
        self._by_shape: dict[tuple, str] = {}

    def add(self, logits: StoredLogits) -> dict:
        shape = (logits.fidelity, str(logits.dtype).removeprefix("torch."), logits.vocab, len(logits.values))
        gid = self._by_shape.get(shape)
        if gid is None:
            gid = self._by_shape[shape] = f"g{len(self._by_shape)}"
            self.groups[gid] = {"fidelity": shape[0], "dtype": shape[1], "vocab": shape[2], "width": shape[3]}
            self._rows[gid] = []
        self._rows[gid].append(logits)
        ref: dict[str, Any] = {"g": gid, "r": len(self._rows[gid]) - 1}
        if logits.extra:
            ref["x"] = [[i, v] for i, v in logits.extra.items()]
        return ref

    def tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for gid, rows in self._rows.items():
            out[f"{gid}.values"] = torch.stack([r.values for r in rows]).contiguous()
            if rows[0].indices is not None:
                out[f"{gid}.indices"] = torch.stack([r.indices for r in rows]).contiguous()
        return out


# -- writing -------------------------------------------------------------------------------------------


def _write_bytes(file: Any, data: bytes) -> None:
    """The one low-level write (tests replace it to simulate a full disk)."""
    file.write(data)
    file.flush()
    os.fsync(file.fileno())


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` through a temporary file and a rename; on failure the temporary file is removed."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            _write_bytes(f, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # directories cannot be opened on some platforms; the renames are still atomic
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(directory: Path, manifest: dict) -> int:
    data = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False).encode()
    _write_atomic(directory / MANIFEST_NAME, data)
    _fsync_dir(directory)
    return len(data)


def segment_paths(directory: Path, number: int) -> tuple[Path, Path]:
    stem = f"{SEGMENT_PREFIX}{number:06d}"
    return directory / f"{stem}.safetensors", directory / f"{stem}.json"


def write_segment(directory: Path, number: int, body: dict, packer: TensorPacker) -> int:
    """Write segment ``number`` crash-safe; returns the bytes written. The JSON lands last (commit)."""
    tensor_path, json_path = segment_paths(directory, number)
    data = save_tensors(packer.tensors()) if packer.groups else save_tensors({})
    _write_atomic(tensor_path, data)
    uses_v2 = any("constraint" in p or "logit_bias" in p for p in body.get("params", ()))
    document = {
        "format_version": CONSTRAINED_FORMAT_VERSION if uses_v2 else PLAIN_FORMAT_VERSION,
        "segment": number,
        "tensors": {"file": tensor_path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        "groups": packer.groups,
        **body,
    }
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    _write_atomic(json_path, text)
    _fsync_dir(directory)
    return len(data) + len(text)


# -- reading -------------------------------------------------------------------------------------------


@dataclass
class Segment:
    number: int
    forwards: list[dict]
    samples: list[dict]
    calls: list[dict]
    params: list[dict]


@dataclass
class Cassette:
    """A loaded cassette: the manifest and every committed segment, in recorded order."""

    path: Path
    manifest: dict
    segments: list[Segment]

    @property
    def fidelity(self) -> str:
        return self.manifest["fidelity"]

    def forwards(self) -> Iterable[dict]:
        for segment in self.segments:
            yield from segment.forwards

    def samples(self) -> Iterable[dict]:
        for segment in self.segments:
            yield from segment.samples

    def calls(self) -> Iterable[dict]:
        for segment in self.segments:
            yield from segment.calls


def _fail(path: Path, problem: str) -> CassetteFormatError:
    return CassetteFormatError(f"{path}: {problem}; the cassette cannot be replayed, {RERECORD_HINT}.")


def _read_file(path: Path, limit: int, directory: Path) -> bytes:
    """The bytes of ``path``, which must be a regular file inside ``directory`` (a symlink may point only
    inside it) of at most ``limit`` bytes: a FIFO, a device, a directory or a link out is refused unread."""
    try:
        real = Path(os.path.realpath(path))
        if real.parent != Path(os.path.realpath(directory)):
            raise _fail(path, "is a link to a file outside the cassette directory")
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise _fail(path, "file missing") from None
    except OSError as error:
        raise _fail(path, f"cannot be opened ({error.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _fail(path, "is not a regular file")
        if info.st_size > limit:
            raise _fail(path, f"is {info.st_size} bytes, over the bound of {limit}")
        chunks, size = [], 0
        while chunk := os.read(fd, min(1 << 24, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise _fail(path, f"grew over the bound of {limit} bytes while being read")
        return b"".join(chunks)
    except OSError as error:
        raise _fail(path, f"cannot be read ({error.strerror})") from None
    finally:
        os.close(fd)


def _json_depth_ok(value: Any, limit: int) -> bool:
    """Whether ``value`` nests at most ``limit`` levels (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return False
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return True


def _read_json(path: Path, directory: Path | None = None) -> Any:
    data = _read_file(path, MAX_JSON_BYTES, directory if directory is not None else path.parent)
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _fail(path, f"not valid JSON (truncated or corrupt: {error})") from None
    except RecursionError:
        raise _fail(path, f"JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)") from None
    if not _json_depth_ok(document, MAX_JSON_DEPTH):
        raise _fail(path, f"JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    return document


def _check_version(path: Path, document: Any) -> None:
    if not isinstance(document, dict):
        raise _fail(path, f"expected a JSON object, found {type(document).__name__}")
    version = document.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _fail(path, f"`format_version` (={version!r}) must be an integer >= 1")
    if version > FORMAT_VERSION:
        raise CassetteFormatError(
            f"{path}: format_version {version} is newer than this chatstream reads (up to "
            f"{FORMAT_VERSION}); upgrade chatstream to replay it, or {RERECORD_HINT}."
        )


def _require(path: Path, entry: Any, where: str, spec: dict[str, tuple]) -> None:
    if not isinstance(entry, dict):
        raise _fail(path, f"{where} is {type(entry).__name__}, expected an object")
    for key, types in spec.items():
        if key not in entry:
            raise _fail(path, f"{where} lacks the field {key!r}")
        if not isinstance(entry[key], types) or (isinstance(entry[key], bool) and bool not in types):
            raise _fail(path, f"{where}.{key} (={entry[key]!r:.60}) has the wrong type")


_FORWARD = {"s": (int,), "h": (str,), "n": (int,), "ids": (list,), "m": (str, list, type(None)), "lg": (dict,)}
_SAMPLE = {"s": (int,), "h": (str,), "n": (int,), "p": (int,), "seed": (int, type(None)), "tok": (int,)}
_CALL = {"s": (int,), "fn": (str,), "a": (list,), "k": (int,), "out": (object,)}


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(type(v) is int for v in value)


def _check_groups(path: Path, groups: dict, tensors: dict) -> None:
    """Every group's description and the shapes and dtypes of its tensors, before any row is used."""
    for gid, group in groups.items():
        where = f"groups.{gid}"
        _require(path, group, where, {"fidelity": (str,), "dtype": (str,), "vocab": (int,), "width": (int,)})
        fidelity, vocab, width = group["fidelity"], group["vocab"], group["width"]
        if fidelity not in FIDELITIES or group["dtype"] not in _DTYPES or not 1 <= vocab <= MAX_VOCAB or \
                not 1 <= width <= vocab:
            raise _fail(path, f"{where} (={group!r:.120}) is malformed")
        values = tensors.get(f"{gid}.values")
        stored = {"exact": _DTYPES[group["dtype"]], "fp16": torch.float16, "compact": torch.float16}[fidelity]
        if values is None or values.dim() != 2 or values.shape[1] != width or values.dtype != stored or \
                (fidelity != "compact" and width != vocab):
            shape = None if values is None else (tuple(values.shape), str(values.dtype))
            raise _fail(path, f"tensor {gid}.values (={shape}) does not hold {fidelity} rows of width {width} "
                              f"as {where} says")
        if fidelity == "compact":
            indices = tensors.get(f"{gid}.indices")
            if indices is None or indices.shape != values.shape or indices.dtype != torch.int32 or \
                    (indices.numel() and not 0 <= int(indices.min()) <= int(indices.max()) < vocab):
                raise _fail(path, f"tensor {gid}.indices is missing, misshapen or holds ids outside the "
                                  f"vocabulary of {vocab}")


def _logit_pair(path: Path, where: str, pair: Any, vocab: int | None = None) -> tuple[int, float]:
    """A kept [token id, logit] pair (``x``), checked."""
    if not (isinstance(pair, list) and len(pair) == 2 and type(pair[0]) is int and pair[0] >= 0
            and (vocab is None or pair[0] < vocab) and type(pair[1]) in (int, float)):
        raise _fail(path, f"{where} (={pair!r:.60}) must be a [token id, logit] pair"
                          + (f" with the id below {vocab}" if vocab is not None else ""))
    return pair[0], float(pair[1])


def _extra_logits(path: Path, where: str, pairs: Any, vocab: int) -> dict[int, float]:
    if not isinstance(pairs, list):
        raise _fail(path, f"{where} (={pairs!r:.60}) must be a list of [token id, logit] pairs")
    return dict(_logit_pair(path, f"{where}[{i}]", pair, vocab) for i, pair in enumerate(pairs))


def _stored_logits(path: Path, where: str, ref: Any, groups: dict, tensors: dict) -> StoredLogits:
    _require(path, ref, where, {"g": (str,), "r": (int,)})
    group = groups.get(ref["g"])
    if group is None:
        raise _fail(path, f"{where} names group {ref['g']!r}, which the segment lacks")
    values = tensors[f"{ref['g']}.values"]
    compact = group["fidelity"] == "compact"
    if not 0 <= ref["r"] < len(values):
        raise _fail(path, f"{where} points at row {ref['r']} of group {ref['g']!r}, which the tensors lack")
    extra = _extra_logits(path, f"{where}.x", ref.get("x", []), group["vocab"])
    return StoredLogits(
        group["fidelity"], _DTYPES[group["dtype"]], group["vocab"], values[ref["r"]],
        tensors[f"{ref['g']}.indices"][ref["r"]] if compact else None, extra,
    )


def _load_segment(json_path: Path) -> Segment:
    document = _read_json(json_path)
    _check_version(json_path, document)
    _require(json_path, document, "the segment", {
        "segment": (int,), "tensors": (dict,), "groups": (dict,), "forwards": (list,), "samples": (list,),
        "calls": (list,), "params": (list,), "kwargs": (list,),
    })
    info = document["tensors"]
    _require(json_path, info, "tensors", {"file": (str,), "bytes": (int,), "sha256": (str,)})
    if Path(info["file"]).name != info["file"] or not info["file"].endswith(".safetensors"):
        raise _fail(json_path, f"tensors.file (={info['file']!r}) must name a .safetensors file beside it")
    tensor_path = json_path.with_name(info["file"])
    data = _read_file(tensor_path, MAX_TENSOR_BYTES, json_path.parent)
    if len(data) != info["bytes"] or hashlib.sha256(data).hexdigest() != info["sha256"]:
        raise _fail(tensor_path, f"{len(data)} bytes that do not match the size/sha256 its segment JSON records")
    try:
        tensors = load_tensors(data)
    except (SafetensorError, ValueError, TypeError, RuntimeError, OverflowError) as error:
        raise _fail(tensor_path, f"not a valid safetensors file ({error})") from None
    groups = document["groups"]
    _check_groups(json_path, groups, tensors)
    forwards, samples, calls = document["forwards"], document["samples"], document["calls"]
    for i, entry in enumerate(forwards):
        _require(json_path, entry, f"forwards[{i}]", _FORWARD)
        if not _int_list(entry["ids"]) or not (entry["m"] in (None, "ones") or _int_list(entry["m"])):
            raise _fail(json_path, f"forwards[{i}].ids / .m must be lists of token ids / mask values")
        entry["logits"] = _stored_logits(json_path, f"forwards[{i}].lg", entry["lg"], groups, tensors)
        vocab = entry["logits"].vocab
        if not all(0 <= token < vocab for token in entry["ids"]):
            raise _fail(json_path, f"forwards[{i}].ids hold a token id outside the vocabulary (0..{vocab - 1})")
    largest_vocab = max((group["vocab"] for group in groups.values()), default=MAX_VOCAB)
    for i, entry in enumerate(samples):
        _require(json_path, entry, f"samples[{i}]", _SAMPLE)
        if not 0 <= entry["tok"] < largest_vocab:
            raise _fail(json_path, f"samples[{i}].tok (={entry['tok']}) is outside the vocabulary "
                                   f"(0..{largest_vocab - 1})")
        if not 0 <= entry["p"] < len(document["params"]) or not isinstance(document["params"][entry["p"]], dict):
            raise _fail(json_path, f"samples[{i}].p (={entry['p']}) is not an index into params")
        if "lf" in entry and type(entry["lf"]) is not int:
            raise _fail(json_path, f"samples[{i}].lf (={entry['lf']!r:.60}) has the wrong type")
        if "x" in entry:
            entry["x"] = _logit_pair(json_path, f"samples[{i}].x", entry["x"])
        entry["params"] = document["params"][entry["p"]]
        if "lg" in entry:
            entry["logits"] = _stored_logits(json_path, f"samples[{i}].lg", entry["lg"], groups, tensors)
    for i, entry in enumerate(calls):
        _require(json_path, entry, f"calls[{i}]", _CALL)
        if not 0 <= entry["k"] < len(document["kwargs"]) or not isinstance(document["kwargs"][entry["k"]], dict):
            raise _fail(json_path, f"calls[{i}].k (={entry['k']}) is not an index into kwargs")
        entry["kw"] = document["kwargs"][entry["k"]]
        _check_encoded(json_path, f"calls[{i}].out", entry["out"])
        problem = recorded_output_problem(entry["fn"], entry["out"])
        if problem is not None:
            raise _fail(json_path, f"calls[{i}].out (={entry['out']!r:.80}) {problem}")
    return Segment(document["segment"], forwards, samples, calls, document["params"])


def _segment_number(path: Path) -> int | None:
    digits = path.stem.removeprefix(SEGMENT_PREFIX)
    return int(digits) if digits.isdigit() else None


def _check_encoded(path: Path, where: str, value: Any) -> None:
    """A recorded value (``encode_value``'s JSON) decodes safely: tensor and array dtypes are known ones."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if item.get("__type__") in ("tensor", "ndarray") and (
                    item.get("dtype") not in _VALUE_DTYPES or not isinstance(item.get("data"), list)):
                raise _fail(path, f"{where} holds a {item.get('__type__')} of unknown dtype "
                                  f"{item.get('dtype')!r:.40} (known: {sorted(_VALUE_DTYPES)})")
            stack.extend(item.values())


def _optional(path: Path, where: str, value: Any, types: tuple, check: Any = None, what: str = "") -> None:
    if value is None:
        return
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types) or \
            (check is not None and not check(value)):
        raise _fail(path, f"{where} (={value!r:.60}) must be {what or ' or '.join(t.__name__ for t in types)}")


def _check_manifest(path: Path, manifest: dict) -> None:
    """Every manifest field the mock model and tokenizer use: types, ranges and names."""
    model, tokenizer = manifest["model"], manifest["tokenizer"]
    _optional(path, "model.name_or_path", model.get("name_or_path"), (str,))
    _optional(path, "model.dtype", model.get("dtype"), (str,), lambda v: v in _DTYPES, f"one of {sorted(_DTYPES)}")
    _optional(path, "model.decode_attention_mask", model.get("decode_attention_mask"), (bool,))
    for name in ("config", "generation_config", "device"):
        _optional(path, f"model.{name}", model.get(name), (dict,), lambda v: not any(k.startswith("__") for k in v),
                  "an object without __dunder__ keys")
    count = (int,)
    in_vocab = (lambda v: 0 <= v <= MAX_VOCAB)  # noqa: E731
    _optional(path, "tokenizer.name_or_path", tokenizer.get("name_or_path"), (str,))
    for name in ("vocab_size", "len"):
        _optional(path, f"tokenizer.{name}", tokenizer.get(name), count, in_vocab, f"an integer in [0, {MAX_VOCAB}]")
    template = tokenizer.get("chat_template")
    _optional(path, "tokenizer.chat_template", template, (str, dict),
              lambda v: isinstance(v, str) or all(isinstance(t, str) for t in v.values()),
              "a string or an object of named template strings")
    _optional(path, "tokenizer.model_max_length", tokenizer.get("model_max_length"), (int, float))
    for name in ("padding_side", "truncation_side"):
        _optional(path, f"tokenizer.{name}", tokenizer.get(name), (str,))
    _optional(path, "tokenizer.all_special_ids", tokenizer.get("all_special_ids"), (list,),
              lambda v: all(type(i) is int and 0 <= i < MAX_VOCAB for i in v), "a list of token ids")
    _optional(path, "tokenizer.all_special_tokens", tokenizer.get("all_special_tokens"), (list,),
              lambda v: all(isinstance(t, str) for t in v), "a list of strings")
    tokens = tokenizer.get("special_tokens_map")
    _optional(path, "tokenizer.special_tokens_map", tokens, (dict,), what="an object")
    for key, value in (tokens or {}).items():
        where = f"tokenizer.special_tokens_map.{key:.40}"
        if key not in SPECIAL_TOKEN_NAMES:
            raise _fail(path, f"{where} is not a special-token field (known: {list(SPECIAL_TOKEN_NAMES)})")
        if key == "additional_special_tokens":
            _optional(path, where, value, (list,), lambda v: all(isinstance(t, str) for t in v), "a list of strings")
        else:
            _optional(path, where, value, (str,))
    ids = tokenizer.get("special_token_ids")
    _optional(path, "tokenizer.special_token_ids", ids, (dict,), what="an object")
    for key, value in (ids or {}).items():
        where = f"tokenizer.special_token_ids.{key:.40}"
        if key not in SPECIAL_TOKEN_ID_NAMES:
            raise _fail(path, f"{where} is not a special-token id field (known: {list(SPECIAL_TOKEN_ID_NAMES)})")
        _optional(path, where, value, (int,), lambda v: 0 <= v < MAX_VOCAB, "a token id")


def load_cassette(path: str | os.PathLike) -> Cassette:
    """Load and check a whole cassette directory; raise CassetteNotFound / CassetteFormatError naming the file."""
    path = Path(path)
    try:
        is_dir = path.is_dir()
    except OSError as error:  # a name too long, a loop of links...
        raise CassetteNotFound(f"no cassette directory at {str(path)[:200]} ({error.strerror}); "
                               f"{RERECORD_HINT}.") from None
    if not is_dir:
        raise CassetteNotFound(f"no cassette directory at {path}; {RERECORD_HINT}.")
    manifest_path = path / MANIFEST_NAME
    if not os.path.lexists(manifest_path):
        raise CassetteNotFound(f"{path} holds no {MANIFEST_NAME}, so it is not a cassette; {RERECORD_HINT}.")
    manifest = _read_json(manifest_path)
    _check_version(manifest_path, manifest)
    _require(manifest_path, manifest, "the manifest", {"fidelity": (str,), "model": (dict,), "tokenizer": (dict,)})
    if manifest["fidelity"] not in FIDELITIES:
        raise _fail(manifest_path, f"fidelity {manifest['fidelity']!r} is not one of {FIDELITIES}")
    _check_manifest(manifest_path, manifest)
    numbered = sorted((n, p) for p in path.glob(f"{SEGMENT_PREFIX}*.json") if (n := _segment_number(p)) is not None)
    segments = [_load_segment(p) for _, p in numbered]
    _link_sampled_logits(path, segments)
    return Cassette(path, manifest, segments)


def _link_sampled_logits(path: Path, segments: list[Segment]) -> None:
    """Put each sampled token's logit (kept with the sample) back into the compact forward it came from."""
    by_seq = {f["s"]: f for s in segments for f in s.forwards}
    for segment in segments:
        for sample in segment.samples:
            forward = by_seq.get(sample.get("lf"))
            if forward is not None and "x" in sample:
                index, value = sample["x"]
                if index >= forward["logits"].vocab:
                    raise _fail(path, f"sample {sample['s']} keeps the logit of token {index}, outside the "
                                      f"vocabulary ({forward['logits'].vocab}) of forward {forward['s']}")
                forward["logits"].extra[index] = value
