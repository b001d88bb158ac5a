"""Where a model comes from: a local HF model directory, a Hub id already in the local HF cache, or
``bundled``, the tiny model that ships with chatstream.

Nothing here touches the network. Every check runs before the weights load, so a mistyped path or a
directory without a tokenizer fails at once with a message that says what to do, not minutes later
with transformers' traceback (a bad path ends in "Repo id must be in the form ...", a missing
tokenizer in advice to install sentencepiece).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..bundled import bundled_model_path
from ..exceptions import ConfigurationError

BUNDLED = "bundled"
"""The name that means the bundled tiny model (``chatstream.bundled``) wherever a model is asked for,
unless a directory of that name exists."""

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model")
"""Files of which a directory needs at least one for ``AutoTokenizer.from_pretrained`` to load from it."""


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


def _from_hub_cache(repo_id: str) -> Path | None:
    """The local snapshot directory of ``repo_id`` in the HF cache (``HF_HUB_CACHE``), or None; offline."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json", cache_dir=_hub_cache_dir())
    except ValueError:  # not a valid repo id
        return None
    return Path(found).parent if isinstance(found, str) else None


def resolve_model_dir(name_or_path: str | os.PathLike, *, what: str = "model") -> Path:
    """The local directory to load ``name_or_path`` from, checked: it exists, has a config.json and a tokenizer.

    ``name_or_path`` is a directory, a Hub id (``org/name``) whose snapshot is in the local HF cache, or
    ``bundled`` (the tiny model that ships with chatstream).
    Raises ConfigurationError naming what is missing and how to get it. ``what`` names the argument in
    messages (``--model``, ``--probe-model``).
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if not path.exists() and text == BUNDLED:
        path = bundled_model_path()
    if not path.exists() and _looks_like_hub_id(text):
        cached = _from_hub_cache(text)
        if cached is None:
            raise ConfigurationError(
                f"{what} {text!r} is neither a local directory nor a Hub model in the local HF cache "
                f"({_hub_cache_dir()}); nothing is downloaded at run time. Download it first "
                f"(`hf download {text}`), or pass the path of a local model directory."
            )
        path = cached
    if not path.exists():
        raise ConfigurationError(
            f"{what} {text!r} does not exist (looked for the directory {path.resolve()}); pass the path of a "
            "local HF model directory (one with config.json, the weights and the tokenizer files)."
        )
    if not path.is_dir():
        raise ConfigurationError(f"{what} {text!r} is a file; pass the directory that holds the model's files.")
    if not (path / "config.json").is_file():
        raise ConfigurationError(
            f"{what} {text!r} is not a HF model directory (no config.json in it); pass the directory that "
            "model.save_pretrained() wrote."
        )
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigurationError(
            f"{what} {text!r} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); save the tokenizer "
            "next to the weights with tokenizer.save_pretrained(path)."
        )
    return path


def _hub_cache_dir() -> str:
    """The HF cache as the environment says now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")
