"""Where cassettes live, and ``start_probe``: wrap a model, tokenizer and sampler for recording.

The parent directory is ``$CHATSTREAM_PROBE_DIR`` when set, else ``~/.cache/chatstream/probe_data``;
each recording gets a directory named by a UTC timestamp (sortable, unique within the parent). The
places themselves live in ``_cassette_places`` (replay reads them without importing the recorder).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._cassette_places import PROBE_DIR_ENV as PROBE_DIR_ENV  # re-exported: the public home of these names
from ._cassette_places import default_probe_parent as default_probe_parent
from ._cassette_places import new_cassette_name, resolve_cassette_dir
from .recording import ProbeRecorder

__all__ = ["PROBE_DIR_ENV", "default_probe_parent", "new_cassette_name", "resolve_cassette_dir", "start_probe"]


def start_probe(
    model: Any,
    tokenizer: Any,
    token_sampler: Any,
    *,
    parent_dir: str | os.PathLike | None = None,
    name: str | None = None,
    fidelity: str | None = None,
    sampling: dict | None = None,
) -> tuple[Any, Any, Any, ProbeRecorder]:
    """Start recording into ``parent_dir/name``; returns the three recording proxies and the recorder.

    Call ``recorder.flush()`` after each finished generation (any thread) and ``recorder.close()``
    at shutdown. ``fidelity`` None means "compact".
    """
    parent = Path(parent_dir).expanduser() if parent_dir is not None else default_probe_parent()
    parent.mkdir(parents=True, exist_ok=True)
    path = resolve_cassette_dir(parent, name if name is not None else new_cassette_name(parent))
    recorder = ProbeRecorder(path, fidelity=fidelity or "compact", sampling=sampling)
    model_proxy, tokenizer_proxy, sampler_proxy = recorder.wrap(model, tokenizer, token_sampler)
    return model_proxy, tokenizer_proxy, sampler_proxy, recorder
