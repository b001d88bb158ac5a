"""The cassette format: a directory of ``manifest.json`` plus committed segments (safetensors + JSON).

docs/cassette-format.md describes the format for readers outside Python. This module writes and
reads it: fidelity encoding of logits, crash-safe segment writes (temporary file, fsync,
``os.replace``; the segment's JSON is renamed last and is its commit marker) and strict loading
that names the file and the problem, building nothing until every file has been checked.
Only ``json`` and ``safetensors`` are used; nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .exceptions import CassetteFormatError, CassetteNotFound

FORMAT_VERSION = 1
FIDELITIES = ("exact", "fp16", "compact")
DEFAULT_FIDELITY = "compact"
COMPACT_TOP_K = 64
MANIFEST_NAME = "manifest.json"
SEGMENT_PREFIX = "segment-"
RERECORD_HINT = (
    "re-record it with `pytest --probe` (plugin-managed cassettes) or by running the live model with "
    "ChatStream(probe_mode_enabled=True) / chatstream.ProbeRecorder"
)

_DTYPES = {str(t).removeprefix("torch."): t for t in (torch.float64, torch.float32, torch.float16, torch.bfloat16)}


def history_hash(ids: Iterable[int] | torch.Tensor) -> str:
    """The content address of a token history: 16 hex digits of BLAKE2b over little-endian int64 ids."""
    return hashlib.blake2b(_id_bytes(ids), digest_size=8).hexdigest()


def _id_bytes(ids: Iterable[int] | torch.Tensor) -> bytes:
    if isinstance(ids, torch.Tensor):
        if ids.device.type != "cpu" or ids.dtype != torch.int64:
            ids = ids.to("cpu", torch.int64)
        return ids.detach().numpy().astype("<i8", copy=False).tobytes()
    ids = ids if isinstance(ids, list) else list(ids)
    return struct.pack(f"<{len(ids)}q", *ids)


class HistoryHasher:
    """An incremental ``history_hash``: ``extend`` returns a new hasher without rehashing the prefix."""

    __slots__ = ("_h",)

    def __init__(self, _h: Any = None) -> None:
        self._h = _h if _h is not None else hashlib.blake2b(digest_size=8)

    def extend(self, ids: Iterable[int] | torch.Tensor) -> HistoryHasher:
        h = self._h.copy()
        h.update(_id_bytes(ids))
        return HistoryHasher(h)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def attention_mask_code(mask: torch.Tensor | None, length: int) -> str | list[int] | None:
    """How a forward's attention mask is kept: None, "ones" (all ones over the whole history) or the row."""
    if mask is None:
        return None
    if tuple(mask.shape) == (1, length) and bool(mask.all()):
        return "ones"
    return mask[0].tolist()


def forward_key(history: str, prefix_len: int, mask: str | list[int] | None) -> str:
    """A forward's address: its whole history's hash, how much of it the cache held, and the mask."""
    mask_part = "-" if mask is None else "1" if mask == "ones" else "m" + history_hash(mask)
    return f"{history}/{prefix_len}/{mask_part}"


def sample_key(history: str, params: dict, seed: int | None) -> str:
    """A sampler call's address: the history it got, the sampling parameters and the generator's seed."""
    return f"{history}/{canonical_json(params)}/{seed}"


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
        if self.indices is None:
            return self.values.to(device=device, dtype=self.dtype, copy=True).view(1, -1)
        if self._parts is None or self._parts[2] != len(self.extra):
            indices, values = self.indices.long(), self.values.to(self.dtype)
            if self.extra:
                indices = torch.cat([indices, torch.tensor(list(self.extra), dtype=torch.long)])
                values = torch.cat([values, torch.tensor(list(self.extra.values()), dtype=self.dtype)])
            self._parts = (indices, values.view(1, -1), len(self.extra))
        indices, values, _ = self._parts
        row = torch.full((1, self.vocab), -math.inf, dtype=self.dtype, device=device)
        if row.device != indices.device:
            indices, values = indices.to(row.device), values.to(row.device)
        return row.index_copy_(1, indices, values)

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


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
    document = {
        "format_version": FORMAT_VERSION,
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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise _fail(path, "file missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _fail(path, f"not valid JSON (truncated or corrupt: {error})") from None


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
_SAMPLE = {"s": (int,), "h": (str,), "n": (int,), "p": (int,), "tok": (int,)}
_CALL = {"s": (int,), "fn": (str,), "a": (list,), "k": (int,), "out": (object,)}


def _stored_logits(path: Path, where: str, ref: Any, groups: dict, tensors: dict) -> StoredLogits:
    _require(path, ref, where, {"g": (str,), "r": (int,)})
    group = groups.get(ref["g"])
    if not isinstance(group, dict) or group.get("fidelity") not in FIDELITIES or group.get("dtype") not in _DTYPES:
        raise _fail(path, f"{where} names group {ref['g']!r}, which is missing or malformed")
    values = tensors.get(f"{ref['g']}.values")
    compact = group["fidelity"] == "compact"
    indices = tensors.get(f"{ref['g']}.indices") if compact else None
    if values is None or (compact and indices is None) or not 0 <= ref["r"] < len(values):
        raise _fail(path, f"{where} points at row {ref['r']} of group {ref['g']!r}, which the tensors lack")
    extra = {int(i): float(v) for i, v in ref.get("x", [])}
    return StoredLogits(
        group["fidelity"], _DTYPES[group["dtype"]], int(group["vocab"]), values[ref["r"]],
        indices[ref["r"]] if compact else None, extra,
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
    try:
        data = tensor_path.read_bytes()
    except FileNotFoundError:
        raise _fail(tensor_path, "file missing (its segment JSON was committed)") from None
    if len(data) != info["bytes"] or hashlib.sha256(data).hexdigest() != info["sha256"]:
        raise _fail(tensor_path, f"{len(data)} bytes that do not match the size/sha256 its segment JSON records")
    try:
        tensors = load_tensors(data)
    except SafetensorError as error:
        raise _fail(tensor_path, f"not a valid safetensors file ({error})") from None
    groups = document["groups"]
    forwards, samples, calls = document["forwards"], document["samples"], document["calls"]
    for i, entry in enumerate(forwards):
        _require(json_path, entry, f"forwards[{i}]", _FORWARD)
        entry["logits"] = _stored_logits(json_path, f"forwards[{i}].lg", entry["lg"], groups, tensors)
    for i, entry in enumerate(samples):
        _require(json_path, entry, f"samples[{i}]", _SAMPLE)
        if not 0 <= entry["p"] < len(document["params"]):
            raise _fail(json_path, f"samples[{i}].p (={entry['p']}) is not an index into params")
        entry["params"] = document["params"][entry["p"]]
        if "lg" in entry:
            entry["logits"] = _stored_logits(json_path, f"samples[{i}].lg", entry["lg"], groups, tensors)
    for i, entry in enumerate(calls):
        _require(json_path, entry, f"calls[{i}]", _CALL)
        if not 0 <= entry["k"] < len(document["kwargs"]) or not isinstance(document["kwargs"][entry["k"]], dict):
            raise _fail(json_path, f"calls[{i}].k (={entry['k']}) is not an index into kwargs")
        entry["kw"] = document["kwargs"][entry["k"]]
    return Segment(document["segment"], forwards, samples, calls, document["params"])


def _segment_number(path: Path) -> int | None:
    digits = path.stem.removeprefix(SEGMENT_PREFIX)
    return int(digits) if digits.isdigit() else None


def load_cassette(path: str | os.PathLike) -> Cassette:
    """Load and check a whole cassette directory; raise CassetteNotFound / CassetteFormatError naming the file."""
    path = Path(path)
    if not path.is_dir():
        raise CassetteNotFound(f"no cassette directory at {path}; {RERECORD_HINT}.")
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise CassetteNotFound(f"{path} holds no {MANIFEST_NAME}, so it is not a cassette; {RERECORD_HINT}.")
    manifest = _read_json(manifest_path)
    _check_version(manifest_path, manifest)
    _require(manifest_path, manifest, "the manifest", {"fidelity": (str,), "model": (dict,), "tokenizer": (dict,)})
    if manifest["fidelity"] not in FIDELITIES:
        raise _fail(manifest_path, f"fidelity {manifest['fidelity']!r} is not one of {FIDELITIES}")
    numbered = sorted((n, p) for p in path.glob(f"{SEGMENT_PREFIX}*.json") if (n := _segment_number(p)) is not None)
    segments = [_load_segment(p) for _, p in numbered]
    _link_sampled_logits(segments)
    return Cassette(path, manifest, segments)


def _link_sampled_logits(segments: list[Segment]) -> None:
    """Put each sampled token's logit (kept with the sample) back into the compact forward it came from."""
    by_seq = {f["s"]: f for s in segments for f in s.forwards}
    for segment in segments:
        for sample in segment.samples:
            forward = by_seq.get(sample.get("lf"))
            if forward is not None and "x" in sample:
                index, value = sample["x"]
                forward["logits"].extra[int(index)] = float(value)
