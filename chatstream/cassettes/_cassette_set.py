"""A set of cassettes replayed as one: the directories that several replicas recorded in probe mode.

Each replica of a probe-mode deployment records into its own cassette directory, named by its replica
(``ChatStream(replica_name=...)``, ``chatstream serve --replica-name``), under one parent. Pointing replay
at that parent (``MockTransformer``, the pytest plugin) replays every cassette in it as one: their
recordings are joined in name order. They must come from the same model, tokenizer and fidelity.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..exceptions import CassetteFormatError
from . import cassette as fmt


def cassette_dirs_in(path: Path) -> list[Path]:
    """The cassette directories directly inside ``path`` (a set), or [] when ``path`` is one cassette or none."""
    try:
        if not path.is_dir() or (path / fmt.MANIFEST_NAME).exists():
            return []
        return sorted(child for child in path.iterdir() if (child / fmt.MANIFEST_NAME).is_file())
    except OSError:
        return []


def load_cassette_or_set(path: str | os.PathLike) -> fmt.Cassette:
    """The cassette at ``path``, or the cassettes directly inside it joined into one (see the module doc)."""
    path = Path(path)
    members = cassette_dirs_in(path)
    if not members:
        return fmt.load_cassette(path)
    cassettes = [fmt.load_cassette(member) for member in members]
    first = cassettes[0]
    for other in cassettes[1:]:
        for key in ("fidelity", "model", "tokenizer"):
            if other.manifest.get(key) != first.manifest.get(key):
                raise CassetteFormatError(
                    f"{path}: the cassettes {first.path.name} and {other.path.name} differ in their {key}, so they "
                    f"cannot be replayed as one set; record every replica with the same model, or replay them "
                    f"one by one.")
    segments = [segment for one in cassettes for segment in one.segments]
    return fmt.Cassette(path, first.manifest, segments)
