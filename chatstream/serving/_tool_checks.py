"""Checks ``chatstream cassette`` makes before it compares: the arguments it was given are the kind it needs.

``verify`` reruns a cassette's answers through a model: a model of another vocabulary cannot be
compared with it (its logits have another width; transformers fails deep inside with a tensor-size
error), and a folder of cassettes is not one cassette.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"


def folder_of_cassettes(path: Path, command: str) -> str | None:
    """The message when ``path`` is not a cassette but a folder holding cassettes; else None."""
    if not path.is_dir() or (path / MANIFEST_NAME).is_file():
        return None
    inside = sorted(manifest.parent for manifest in path.rglob(MANIFEST_NAME))
    if not inside:
        return None
    example = inside[0]
    return (f"{path} is a folder of {len(inside)} cassette(s), not one cassette; `{command}` takes one cassette "
            f"directory (the one holding {MANIFEST_NAME}), e.g. {example}. `chatstream cassette list {path}` "
            "lists them.")


def _recorded_vocab(manifest: dict) -> int | None:
    config = manifest.get("model", {}).get("config")
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError:
            return None
    value = config.get("vocab_size") if isinstance(config, dict) else None
    return value if isinstance(value, int) else None


def _live_vocab(model: Any) -> int | None:
    embeddings = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(embeddings, "weight", None)
    if weight is not None:
        return int(weight.shape[0])
    value = getattr(getattr(model, "config", None), "vocab_size", None)
    return value if isinstance(value, int) else None


def vocabulary_mismatch(manifest: dict, model: Any, tokenizer: Any, model_name: str) -> str | None:
    """The message when ``model`` / ``tokenizer`` have another vocabulary than the cassette was recorded with."""
    recorded_model, live_model = _recorded_vocab(manifest), _live_vocab(model)
    recorded_tokenizer = manifest.get("tokenizer", {}).get("len")
    live_tokenizer = len(tokenizer) if hasattr(tokenizer, "__len__") else None
    differences = []
    if None not in (recorded_model, live_model) and recorded_model != live_model:
        differences.append(f"the model's vocabulary has {live_model} tokens, the cassette's {recorded_model}")
    if None not in (recorded_tokenizer, live_tokenizer) and recorded_tokenizer != live_tokenizer:
        differences.append(f"the tokenizer has {live_tokenizer} tokens, the cassette's {recorded_tokenizer}")
    if not differences:
        return None
    recorded_name = manifest.get("model", {}).get("name_or_path") or "another model"
    return (f"the model {model_name} does not match the cassette, which was recorded from {recorded_name}: "
            f"{'; '.join(differences)}. verify compares a cassette with the model it was recorded from (or a "
            "new build of it); pass that model with --model.")
