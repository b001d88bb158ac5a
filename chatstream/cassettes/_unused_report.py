"""The unused-cassette report: which cassettes the last plain ``pytest`` run did not use.

The pytest plugin writes it into the cassette directory after a replay run that judged the whole
directory; ``chatstream cassette prune`` reads it. Plain JSON, so neither side needs the other:
``{"format_version": 1, "written_at": ISO time, "cassette_dir": absolute path, "unused": [relative
cassette paths, "/"-separated]}``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

UNUSED_REPORT_NAME = ".chatstream-unused.json"
UNUSED_REPORT_VERSION = 1


def write_unused_report(cassette_dir: str | os.PathLike, unused: list[str]) -> Path:
    """Write the report of ``unused`` (paths relative to ``cassette_dir``) into ``cassette_dir``; returns its path."""
    directory = Path(cassette_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / UNUSED_REPORT_NAME
    document = {
        "format_version": UNUSED_REPORT_VERSION,
        "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cassette_dir": str(directory.resolve()),
        "unused": sorted(unused),
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_unused_report(cassette_dir: str | os.PathLike) -> dict:
    """The report in ``cassette_dir``; raises FileNotFoundError when there is none, ValueError when malformed."""
    path = Path(cassette_dir) / UNUSED_REPORT_NAME
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or document.get("format_version") != UNUSED_REPORT_VERSION or \
            not isinstance(document.get("unused"), list) or not all(isinstance(p, str) for p in document["unused"]):
        raise ValueError(f"{path} is not an unused-cassette report of format_version {UNUSED_REPORT_VERSION}")
    return document
