"""Writing a cassette so that a failed test never damages the one already there.

A recording goes into a temporary sibling directory (``.<name>.recording-*``); only when its test
passed does :func:`commit` swap it in place of the cassette. A cassette shared by several tests is
recorded once per run: the first test to :meth:`ClaimBoard.claim` it records it, the others wait for
it and replay it. Claims are files created with ``O_EXCL`` in a directory every xdist worker of the
run shares, so two workers never write the same cassette.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path


def new_staging_dir(cassette: Path) -> Path:
    """A fresh, empty directory beside ``cassette`` (same file system, so the final rename is atomic)."""
    cassette.parent.mkdir(parents=True, exist_ok=True)
    while True:  # not tempfile.mkdtemp: its 0700 would become the cassette's mode; mkdir follows the umask
        staging = cassette.parent / f".{cassette.name}.recording-{uuid.uuid4().hex[:12]}"
        try:
            staging.mkdir()
        except FileExistsError:  # pragma: no cover - a 48-bit collision
            continue
        return staging


def commit(staging: Path, cassette: Path) -> int:
    """Replace ``cassette`` by ``staging``; returns the new cassette's size in bytes."""
    old = None
    if cassette.exists():
        old = cassette.with_name(f".{cassette.name}.replaced-{uuid.uuid4().hex[:8]}")
        os.replace(cassette, old)
    os.replace(staging, cassette)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return tree_size(cassette)


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def tree_size(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class ClaimBoard:
    """Who records which cassette in this run, shared by the run's processes through files in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root  # made on the first claim: a run that records nothing leaves no trace

    @classmethod
    def for_run(cls, run_id: str) -> ClaimBoard:
        return cls(Path(tempfile.gettempdir()) / f"chatstream-claims-{run_id}")

    def _file(self, cassette: Path, suffix: str) -> Path:
        key = hashlib.sha256(str(cassette.resolve()).encode()).hexdigest()[:32]
        return self.root / f"{key}.{suffix}"

    def claim(self, cassette: Path) -> bool:
        """True for the first caller of the run (it records); False when someone else holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self._file(cassette, "claim"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.close(fd)
        return True

    def is_done(self, cassette: Path) -> bool:
        return self._file(cassette, "done").exists()

    def release(self, cassette: Path, recorded: bool) -> None:
        """Mark the claim finished: recorded (others replay it) or not (the next test may record it)."""
        if recorded:
            self._file(cassette, "done").touch()
        else:
            self._file(cassette, "claim").unlink(missing_ok=True)

    def acquire_or_wait(self, cassette: Path, timeout: float = 900.0, poll: float = 0.05) -> bool:
        """True: the caller must record ``cassette``. False: it was recorded in this run, replay it."""
        deadline = time.monotonic() + timeout
        while True:
            if self.is_done(cassette):
                return False
            if self.claim(cassette):
                return True
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"waited {timeout:.0f} s for another test of this run to record the shared cassette "
                    f"{cassette}; it never finished. Run the tests that share it in one process."
                )
            time.sleep(poll)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
