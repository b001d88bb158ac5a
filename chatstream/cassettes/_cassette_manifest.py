"""The manifest a recording writes first: versions, device, model, tokenizer, fingerprints, sampling.

No local path is written: a model's ``name_or_path`` (and any other string in the model's and
tokenizer's settings that is an absolute path or under the home directory) becomes its Hub id when it
lies in the HF cache, else the path's last component; so recording on another machine does not
change the manifest, and no home directory leaks into a committed cassette.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import sys
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import Any

import torch

from . import cassette as fmt
from ._cassette_values import encode_value
from .fingerprint import fingerprint_loaded

_HUB_SNAPSHOT = re.compile(r"(?:^|/)models--(?P<repo>[^/]+)/snapshots/[^/]+(?:/|$)")


def _looks_absolute(text: str) -> bool:
    if "\n" in text or len(text) > 4096:
        return False
    home = os.path.expanduser("~")
    if home not in ("", "/", "~") and (text == home or text.startswith(home.rstrip("/\\") + os.sep)):
        return True
    posix, windows = PurePosixPath(text), PureWindowsPath(text)
    return ((posix.is_absolute() and len(posix.parts) >= 3) or (windows.is_absolute() and len(windows.parts) >= 2)
            or text.startswith("~/"))


def portable_name(text: str) -> str:
    """A local path as a portable name: the Hub id of an HF cache snapshot, else its last component.

    Anything that is not an absolute path of two components or more, nor under the home directory
    (a Hub id, a relative name, ``/``), is returned unchanged.
    """
    if not _looks_absolute(text):
        return text
    posix = text.replace("\\", "/")
    match = _HUB_SNAPSHOT.search(posix)
    if match:
        return match.group("repo").replace("--", "/")
    return PurePath(posix).name or PureWindowsPath(text).name


def _portable(value: Any) -> Any:
    """``value`` (JSON) with every absolute-path string made a portable name."""
    if isinstance(value, str):
        return portable_name(value)
    if isinstance(value, dict):
        return {key: _portable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_portable(item) for item in value]
    return value


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return platform.processor() or platform.machine() or "cpu"


def _json_config(config: Any) -> dict | None:
    if config is None:
        return None
    try:
        return json.loads(config.to_json_string(use_diff=False))
    except (AttributeError, TypeError, ValueError):
        return None


def _tokenizer_manifest(tokenizer: Any) -> dict:
    info: dict[str, Any] = {"class": type(tokenizer).__name__}
    for name in ("name_or_path", "vocab_size", "chat_template", "model_max_length", "padding_side",
                 "truncation_side", "special_tokens_map", "all_special_ids", "all_special_tokens"):
        value = getattr(tokenizer, name, None)
        info[name] = encode_value(value if not isinstance(value, tuple) else list(value))
    info["name_or_path"] = portable_name(str(info["name_or_path"] or ""))
    info["len"] = len(tokenizer) if hasattr(tokenizer, "__len__") else info["vocab_size"]
    info["special_token_ids"] = {
        f"{role}_token_id": getattr(tokenizer, f"{role}_token_id", None)
        for role in ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
    }
    return info


def _model_manifest(model: Any, forward_accepts_logits_to_keep: bool) -> dict:
    device = torch.device(getattr(model, "device", "cpu"))
    return {
        "class": type(model).__name__,
        "name_or_path": portable_name(str(getattr(model, "name_or_path", "") or "")),
        "dtype": str(getattr(model, "dtype", torch.float32)).removeprefix("torch."),
        "config": _portable(_json_config(getattr(model, "config", None))),
        "generation_config": _portable(_json_config(getattr(model, "generation_config", None))),
        "forward_accepts_logits_to_keep": forward_accepts_logits_to_keep,
        "device": {"type": device.type, "name": _device_name(device)},
    }


def build_manifest(model: Any, tokenizer: Any, token_sampler: Any, fidelity: str, sampling: dict | None,
                   extra_metadata: dict | None, *, forward_accepts_logits_to_keep: bool) -> dict:
    """The manifest of a cassette recording these objects (see docs/cassette-format.md).

    ``forward_accepts_logits_to_keep``: what the recorder found in the model's forward (the format records
    the fact; reading a forward's signature belongs to the engine)."""
    import transformers

    from .. import __version__

    return {
        "format_version": fmt.PLAIN_FORMAT_VERSION,  # version 2 only in segments that need it
        "fidelity": fidelity,
        "recorded_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"chatstream": __version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "python": platform.python_version()},
        "platform": f"{sys.platform} {platform.machine()}",
        "model": _model_manifest(model, forward_accepts_logits_to_keep),
        "tokenizer": _tokenizer_manifest(tokenizer),
        "token_sampler": {"class": type(token_sampler).__name__},
        "fingerprints": fingerprint_loaded(model, tokenizer),
        "sampling": encode_value(sampling),
        "extra": encode_value(extra_metadata),
    }
