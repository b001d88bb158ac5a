"""Where the tiny chat model that ships with the project lives."""

from __future__ import annotations

import os
from pathlib import Path

from .exceptions import ConfigurationError

BUNDLED_MODEL_DIRNAME = "tiny-chat"
_ENV_VAR = "CHATSTREAM_BUNDLED_MODEL"
_PACKAGE_DIR = Path(__file__).resolve().parent
# One copy in the repository, fixtures/tiny-chat/; the wheel carries it as chatstream/tiny_chat/
# (setup.py maps the one onto the other).
_INSTALLED = _PACKAGE_DIR / "tiny_chat"
_CHECKOUT = _PACKAGE_DIR.parent / "fixtures" / BUNDLED_MODEL_DIRNAME


def bundled_model_path() -> Path:
    """The bundled tiny model's directory: ``chatstream/tiny_chat`` in an installed wheel,
    ``fixtures/tiny-chat`` in a source checkout or an editable install.

    ``CHATSTREAM_BUNDLED_MODEL`` overrides it. Raises ConfigurationError, saying how to rebuild it,
    when it is missing.
    """
    override = os.environ.get(_ENV_VAR)
    candidates = [Path(override)] if override else [_INSTALLED, _CHECKOUT]
    for path in candidates:
        if (path / "config.json").is_file():
            return path
    where = " or ".join(str(path) for path in candidates)
    raise ConfigurationError(
        f"the bundled tiny model is not at {where}; run `python tools/build_tiny_model.py` in a source "
        f"checkout to build it, set {_ENV_VAR} to a model directory, or pass the path of a local HF model directory."
    )
