"""Where cassettes live: the default parent directory, safe cassette names, timestamp names; fidelity names.

The parent directory is ``$CHATSTREAM_PROBE_DIR`` when set, else ``~/.cache/chatstream/probe_data``;
each recording gets a directory named by a UTC timestamp (sortable, unique within the parent).
Shared by the recorder (``probe``) and the replayer (``replay``), which never imports the recorder.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path, PurePath

from ..exceptions import ConfigurationError

PROBE_DIR_ENV = "CHATSTREAM_PROBE_DIR"
# how a cassette keeps logits (see chatstream.cassettes.cassette.encode_logits): the one home of the names
FIDELITIES = ("compact", "fp16", "exact")
DEFAULT_FIDELITY = "compact"


def default_probe_parent() -> Path:
    """``$CHATSTREAM_PROBE_DIR`` or ``~/.cache/chatstream/probe_data``."""
    override = os.environ.get(PROBE_DIR_ENV)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "chatstream" / "probe_data"


def resolve_cassette_dir(parent_dir: str | os.PathLike | None, name: str) -> Path:
    """``parent_dir / name``, refusing a name that is empty, absolute or climbs out with ``..``."""
    if not isinstance(name, (str, os.PathLike)) or not str(name).strip():
        raise ConfigurationError(f"the cassette name (={name!r}) must be a non-empty relative directory name.")
    pure = PurePath(name)
    if pure.is_absolute() or pure.drive or ".." in pure.parts:
        raise ConfigurationError(
            f"the cassette name (={str(name)!r}) must stay inside its parent directory: no absolute path, "
            "no '..'. Pass the parent directory separately (parent_dir / parent_dir_path)."
        )
    parent = Path(parent_dir).expanduser() if parent_dir is not None else default_probe_parent()
    return parent / pure


def new_cassette_name(parent_dir: Path) -> str:
    """A timestamp name (``20250102T030405.123456Z``) not yet taken in ``parent_dir``."""
    base = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    name, n = base, 1
    while (parent_dir / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name
