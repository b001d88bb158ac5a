"""The model a ``--probe`` run records from: a local directory, a Hub id found in the local HF cache, or
``bundled`` (the tiny model that ships with chatstream, usable from any project); and the live model and
device of a ``--probe`` run.

Nothing here downloads: a Hub id (``org/name``) is looked up in the HF cache only (``HF_HUB_CACHE``,
else huggingface_hub's default), so recording works offline once the model was fetched. The checks
are chatstream's own (``chatstream.engine.model_source``), the ones ``chatstream serve --model`` makes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ._errors import configuration_error
from ._paths import resolve_dir
from ._settings import MODEL_ENV, NO_MODEL_MESSAGE, Settings


def locate_model(spec: str, origin: str, base: Path) -> Path:
    """The checked local directory of the model ``spec`` names (a path taken from ``base``, or a cached
    Hub id); raises ConfigurationError naming ``origin`` (the option) and what to do."""
    from chatstream.engine.model_source import BUNDLED, resolve_model_dir

    path = resolve_dir(spec, base)
    hub_id = not path.exists() and spec.count("/") == 1 and not spec.startswith((".", "/", "~"))
    by_name = not path.exists() and (hub_id or spec == BUNDLED)
    return resolve_model_dir(spec if by_name else path, what=origin)


def local_model(spec: str, origin: str, base: Path) -> Path | None:
    """The model's local directory when there is a usable one on this machine, else None (CI: no model)."""
    from chatstream.exceptions import ConfigurationError

    try:
        return locate_model(spec, origin, base)
    except ConfigurationError:
        return None


def with_model_dir(settings: Settings) -> Settings:
    """``settings`` with ``model_path`` set to the checked local directory of the model a live run records from.

    Checked once, at configure time, so a mistyped model stops the run instead of erroring in every test:
    raises ConfigurationError saying what is missing and how to get it. Unchanged when the run is not live or
    names no model.
    """
    if not (settings.live and settings.model_spec and settings.model_base):
        return settings
    model_dir = locate_model(settings.model_spec, settings.model_origin, settings.model_base)
    return dataclasses.replace(settings, model_path=model_dir)


def load_live_model(settings: Settings) -> tuple[Any, Any]:
    """The live ``(model, tokenizer)`` of a ``--probe`` run, on its device; ConfigurationError outside one, or
    when no model is configured."""
    if not settings.live:
        raise configuration_error(
            "chatstream_live_model loads the live model, which only a --probe run does; "
            "plain pytest replays cassettes with mock_transformer."
        )
    if settings.model_path is None:
        raise configuration_error(NO_MODEL_MESSAGE.format(env=MODEL_ENV))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chatstream.engine.device import resolve_device

    device = resolve_device(settings.device)
    model = AutoModelForCausalLM.from_pretrained(settings.model_path).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(settings.model_path)
    return model, tokenizer


def run_device(settings: Settings) -> str:
    """The torch device the fixtures run on: cpu in replay (it needs no accelerator), the live model's under
    ``--probe``."""
    if not settings.live:
        return "cpu"
    from chatstream.engine.device import resolve_device

    return str(resolve_device(settings.device))
