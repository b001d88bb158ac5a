"""Where the tiny chat model that ships with the project lives."""

from __future__ import annotations

import os
from pathlib import Path

from .exceptions import ConfigurationError

BUNDLED_MODEL_DIRNAME = "tiny-chat"
_ENV_VAR = "CHATSTREAM_BUNDLED_MODEL"


def bundled_model_path() -> Path:
    """The bundled tiny model's directory (``fixtures/tiny-chat`` in a source checkout).

    ``CHATSTREAM_BUNDLED_MODEL`` overrides it. Raises ConfigurationError, saying how to rebuild it,
    when it is missing.
    """
    override = os.environ.get(_ENV_VAR)
    path = Path(override) if override else Path(__file__).resolve().parent.parent / "fixtures" / BUNDLED_MODEL_DIRNAME
    if not (path / "config.json").is_file():
        raise ConfigurationError(
            f"the bundled tiny model is not at {path}; run `python tools/build_tiny_model.py` in a source "
            f"checkout to build it, set {_ENV_VAR}, or pass the path of a local HF model directory."
        )
    return path
