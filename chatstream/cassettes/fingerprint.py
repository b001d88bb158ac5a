"""Fingerprints of a model's weights, tokenizer and chat template, stored in each cassette's manifest.

A fingerprint is a short ``sha256:`` string. The weights' one (``content-sha256:``) hashes each
weight file's name, size and content: the whole file up to 64 MiB, else the safetensors header and
a few KB of each tensor (or blocks sampled through other formats), or, in the HF cache, the name of
the blob it links to, which is its sha256; so a retrain at the same size is noticed, and a 100 GB
checkpoint costs a few MB of reads. Manifests written before that hold names and sizes only
(``sha256:``); :func:`same_weights` compares those the old way. The tokenizer's fingerprint hashes
its files' contents (the chat template left out); the chat template's hashes the template text.
``fingerprint_model_dir`` reads a model directory without loading anything; ``fingerprint_loaded``
gives the same answers for a loaded model and tokenizer whose ``name_or_path`` is that directory
(or a Hub id cached there), so a replayed cassette can tell whether the local model changed since
it was recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack")
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt", "spiece.model",
    "special_tokens_map.json", "added_tokens.json", "tokenizer_config.json",
)


FULL_HASH_LIMIT = 64 * 1024 * 1024  # weight files up to this size are hashed whole
SAMPLE_BLOCK = 4096  # bytes read at each end of a tensor (or at each sample) in larger files
SAMPLES = 256  # blocks sampled from a large weight file that is not safetensors
WEIGHTS_PREFIX = "content-sha256:"
LEGACY_PREFIX = "sha256:"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _weight_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
                  and not p.name.startswith("training_args"))


def _hub_blob_id(path: Path) -> str | None:
    """The content hash the HF cache names a weight file's blob by (``blobs/<sha256>``), if it is one."""
    if not path.is_symlink():
        return None
    target = path.resolve()
    if target.parent.name == "blobs" and _SHA256_HEX.fullmatch(target.name):
        return "blob:" + target.name
    return None


def _read_at(handle: Any, offset: int, size: int) -> bytes:
    handle.seek(offset)
    return handle.read(size)


def _safetensors_spans(handle: Any, size: int) -> tuple[int, list[tuple[int, int]]] | None:
    """``(header length, [(start, end) of each tensor's data])`` of a safetensors file, None if it is not one."""
    raw = _read_at(handle, 0, 8)
    if len(raw) < 8:
        return None
    header_len = int.from_bytes(raw, "little")
    if not 2 <= header_len <= min(size - 8, 100 * 1024 * 1024):
        return None
    try:
        header = json.loads(_read_at(handle, 8, header_len))
    except ValueError:
        return None
    base = 8 + header_len
    spans = []
    for name, entry in header.items():
        if name == "__metadata__" or not isinstance(entry, dict):
            continue
        start, end = entry.get("data_offsets", (0, 0))
        spans.append((base + int(start), base + int(end)))
    return header_len, sorted(spans)


def _content_id(path: Path) -> str:
    """A hash of a weight file's content: all of it when small, else its header and sampled blocks.

    A file up to ``FULL_HASH_LIMIT`` bytes is hashed whole. A larger safetensors file hashes its header
    (every tensor's name, dtype, shape and offsets) plus the first and last ``SAMPLE_BLOCK`` bytes of
    each tensor's data, so a retrain that changes a tensor changes the hash; other large files hash
    ``SAMPLES`` blocks spread evenly through the file. Reads at most a few MB of a 100 GB checkpoint.
    """
    blob = _hub_blob_id(path)
    if blob is not None:
        return blob
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        if size <= FULL_HASH_LIMIT:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                h.update(chunk)
            return "full:" + h.hexdigest()
        layout = _safetensors_spans(handle, size) if path.suffix == ".safetensors" else None
        if layout is not None:
            header_len, spans = layout
            h.update(_read_at(handle, 0, 8 + header_len))
            for start, end in spans:
                h.update(_read_at(handle, start, min(SAMPLE_BLOCK, end - start)))
                if end - start > SAMPLE_BLOCK:
                    h.update(_read_at(handle, max(start + SAMPLE_BLOCK, end - SAMPLE_BLOCK), SAMPLE_BLOCK))
            return "sampled-safetensors:" + h.hexdigest()
        step = max(1, (size - SAMPLE_BLOCK) // (SAMPLES - 1))
        for index in range(SAMPLES):
            h.update(_read_at(handle, min(index * step, max(0, size - SAMPLE_BLOCK)), SAMPLE_BLOCK))
        return "sampled:" + h.hexdigest()


def _weights(directory: Path) -> str | None:
    files = _weight_files(directory)
    if not files:
        return None
    rows = [f"{p.name}\t{p.stat().st_size}\t{_content_id(p)}" for p in files]
    return WEIGHTS_PREFIX + hashlib.sha256("\n".join(rows).encode()).hexdigest()


def legacy_weights_fingerprint(path: str | os.PathLike) -> str | None:
    """The weights fingerprint of manifests written before content was hashed (file names and sizes only)."""
    files = _weight_files(Path(path))
    if not files:
        return None
    return _digest("\n".join(f"{p.name}\t{p.stat().st_size}" for p in files).encode())


def same_weights(recorded: str | None, current: str | None, directory: str | os.PathLike | None) -> bool:
    """Whether a manifest's weights fingerprint matches ``directory``'s (``current``); True when unknown.

    A fingerprint from before content was hashed is compared the way it was made (names and sizes).
    """
    if recorded is None or current is None:
        return True
    if recorded.startswith(LEGACY_PREFIX) and not current.startswith(LEGACY_PREFIX) and directory is not None:
        current = legacy_weights_fingerprint(directory)
    return recorded == current


def _tokenizer_config(directory: Path) -> dict | None:
    path = directory / "tokenizer_config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _tokenizer(directory: Path) -> str | None:
    h = hashlib.sha256()
    found = False
    for name in TOKENIZER_FILES:
        path = directory / name
        if not path.is_file():
            continue
        found = True
        data = path.read_bytes()
        if name == "tokenizer_config.json":  # its chat_template has a fingerprint of its own
            config = _tokenizer_config(directory) or {}
            config.pop("chat_template", None)
            data = json.dumps(config, sort_keys=True).encode()
        h.update(f"{name}\t{len(data)}\n".encode())
        h.update(data)
    return "sha256:" + h.hexdigest() if found else None


def chat_template_fingerprint(template: Any) -> str | None:
    """The fingerprint of a chat template (a string, or a dict of named templates), None for none."""
    if not template:
        return None
    text = template if isinstance(template, str) else json.dumps(template, sort_keys=True)
    return _digest(text.encode())


def _chat_template(directory: Path) -> str | None:
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return chat_template_fingerprint(jinja.read_text(encoding="utf-8"))
    legacy = directory / "chat_template.json"
    if legacy.is_file():
        try:
            return chat_template_fingerprint(json.loads(legacy.read_text(encoding="utf-8")).get("chat_template"))
        except ValueError:
            return None
    return chat_template_fingerprint((_tokenizer_config(directory) or {}).get("chat_template"))


def fingerprint_model_dir(path: str | os.PathLike) -> dict[str, str | None]:
    """``{"weights", "tokenizer", "chat_template"}`` fingerprints of a local HF model directory.

    Nothing is loaded; a part the directory lacks is None. Raises FileNotFoundError naming the path
    when it is not a directory.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"no model directory at {directory}")
    return {
        "weights": _weights(directory),
        "tokenizer": _tokenizer(directory),
        "chat_template": _chat_template(directory),
    }


def _local_dir(obj: Any, hub_cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The directory ``obj`` was loaded from: its ``name_or_path``, or that Hub id's snapshot in the HF cache."""
    name = getattr(obj, "name_or_path", None) or getattr(getattr(obj, "config", None), "_name_or_path", None)
    if not isinstance(name, (str, os.PathLike)) or not str(name):
        return None
    if Path(name).is_dir():
        return Path(name)
    revision = getattr(getattr(obj, "config", None), "_commit_hash", None)
    return _hub_snapshot(str(name), revision if isinstance(revision, str) else None, hub_cache_dir)


def _hub_snapshot(repo_id: str, revision: str | None, cache_dir: str | os.PathLike | None) -> Path | None:
    """The cached snapshot directory of a Hub model id; looks in the local cache only, never the network."""
    from huggingface_hub import try_to_load_from_cache

    for filename in ("config.json", "tokenizer_config.json"):
        try:
            found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
        except ValueError:  # not a valid Hub id (a local path that does not exist, say)
            return None
        if isinstance(found, str):
            return Path(found).parent
    return None


def _parameters_fingerprint(model: Any) -> str | None:
    named = getattr(model, "named_parameters", None)
    if named is None:
        return None
    rows = [f"{n}\t{tuple(p.shape)}\t{p.dtype}" for n, p in named()]
    return "params-" + _digest("\n".join(rows).encode()) if rows else None


def _vocab_fingerprint(tokenizer: Any) -> str | None:
    get_vocab = getattr(tokenizer, "get_vocab", None)
    if get_vocab is None:
        return None
    return "vocab-" + _digest(json.dumps(sorted(get_vocab().items())).encode())


def fingerprint_loaded(model: Any, tokenizer: Any, *,
                       hub_cache_dir: str | os.PathLike | None = None) -> dict[str, str | None]:
    """Fingerprints of a loaded model and tokenizer.

    When they were loaded from a local directory, or from a Hub id whose files are in the HF cache
    (``hub_cache_dir``, default the HF cache), these equal ``fingerprint_model_dir`` of that
    directory (except the chat template, taken from the tokenizer as it is now). Otherwise the
    weights' fingerprint hashes parameter names, shapes and dtypes (``params-sha256:``) and the
    tokenizer's its vocabulary (``vocab-sha256:``); those never equal a directory's.
    """
    model_dir, tokenizer_dir = _local_dir(model, hub_cache_dir), _local_dir(tokenizer, hub_cache_dir)
    weights = _weights(model_dir) if model_dir else None
    tokenizer_print = _tokenizer(tokenizer_dir) if tokenizer_dir else None
    return {
        "weights": weights or _parameters_fingerprint(model),
        "tokenizer": tokenizer_print or _vocab_fingerprint(tokenizer),
        "chat_template": chat_template_fingerprint(getattr(tokenizer, "chat_template", None)),
    }
