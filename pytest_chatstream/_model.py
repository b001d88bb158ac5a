"""The model a ``--probe`` run records from: a local directory, or a Hub id found in the local HF cache.

Nothing here downloads: a Hub id (``org/name``) is looked up in the HF cache only (``HF_HUB_CACHE``,
else huggingface_hub's default), so recording works offline once the model was fetched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ._paths import resolve_dir

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def looks_like_hub_id(spec: str) -> bool:
    """Whether ``spec`` has the form of a Hub model id (``org/name``); it may also be a relative path."""
    return bool(_HUB_ID.fullmatch(spec)) and ".." not in spec


def hub_cache_dir() -> Path | None:
    """The HF cache directory from the environment, read now (None: huggingface_hub's default)."""
    value = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    return Path(value).expanduser() if value else None


def find_model(spec: str, base: Path) -> Path | None:
    """The local directory of the model ``spec`` names: ``base``-relative path, else cached Hub id, else None."""
    path = resolve_dir(spec, base)
    if path.is_dir():
        return path
    if path.exists() or not looks_like_hub_id(spec):
        return None
    from chatstream.fingerprint import hub_snapshot

    return hub_snapshot(spec, cache_dir=hub_cache_dir())


def model_problem(spec: str, origin: str, base: Path) -> str | None:
    """Why ``spec`` cannot be recorded from (a usage error's text), or None when it can."""
    found = find_model(spec, base)
    if found is not None:
        if (found / "config.json").is_file():
            return None
        return (f"{origin} {spec!r}: {found} has no config.json, so it is not a HF model directory; "
                "point it at the directory that holds config.json and the weights.")
    path = resolve_dir(spec, base)
    hub = ""
    if looks_like_hub_id(spec) and not path.exists():
        cache = hub_cache_dir() or "huggingface_hub's default cache (~/.cache/huggingface/hub)"
        hub = (f", and no Hub model {spec!r} is in the local HF cache ({cache}); nothing is downloaded during "
               f"tests, so fetch it first (huggingface-cli download {spec}) or pass its local directory")
    else:
        hub = "; pass a local HF model directory (relative paths are taken from where pytest runs)"
    return f"{origin} {spec!r}: no model directory at {path}{hub}."
