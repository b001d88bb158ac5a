"""The model a ``--probe`` run records from: a local directory, a Hub id found in the local HF cache, or
``bundled`` (the tiny model that ships with chatstream, usable from any project).

Nothing here downloads: a Hub id (``org/name``) is looked up in the HF cache only (``HF_HUB_CACHE``,
else huggingface_hub's default), so recording works offline once the model was fetched. The checks
are chatstream's own (``chatstream.engine.model_source``), the ones ``chatstream serve --model`` makes.
"""

from __future__ import annotations

from pathlib import Path

from ._paths import resolve_dir


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
