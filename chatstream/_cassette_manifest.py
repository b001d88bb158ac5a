"""The manifest a recording writes first: versions, device, model, tokenizer, fingerprints, sampling."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import sys
from typing import Any

import torch

from . import cassette as fmt
from ._cassette_values import encode_value
from .fingerprint import fingerprint_loaded
from .generation import accepts_logits_to_keep


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
    info["len"] = len(tokenizer) if hasattr(tokenizer, "__len__") else info["vocab_size"]
    info["special_token_ids"] = {
        f"{role}_token_id": getattr(tokenizer, f"{role}_token_id", None)
        for role in ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
    }
    return info


def _model_manifest(model: Any) -> dict:
    device = torch.device(getattr(model, "device", "cpu"))
    return {
        "class": type(model).__name__,
        "name_or_path": str(getattr(model, "name_or_path", "") or ""),
        "dtype": str(getattr(model, "dtype", torch.float32)).removeprefix("torch."),
        "config": _json_config(getattr(model, "config", None)),
        "generation_config": _json_config(getattr(model, "generation_config", None)),
        "forward_accepts_logits_to_keep": accepts_logits_to_keep(model),
        "device": {"type": device.type, "name": _device_name(device)},
    }


def build_manifest(model: Any, tokenizer: Any, token_sampler: Any, fidelity: str, sampling: dict | None,
                   extra_metadata: dict | None) -> dict:
    """The manifest of a cassette recording these objects (see docs/cassette-format.md)."""
    import transformers

    from . import __version__

    return {
        "format_version": fmt.FORMAT_VERSION,
        "fidelity": fidelity,
        "recorded_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"chatstream": __version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "python": platform.python_version()},
        "platform": f"{sys.platform} {platform.machine()}",
        "model": _model_manifest(model),
        "tokenizer": _tokenizer_manifest(tokenizer),
        "token_sampler": {"class": type(token_sampler).__name__},
        "fingerprints": fingerprint_loaded(model, tokenizer),
        "sampling": encode_value(sampling),
        "extra": encode_value(extra_metadata),
    }
