"""What the plugin knows about one cassette-backed test while it runs, kept on the pytest item."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._misses import MissLog
from ._recording import PendingRecording
from ._repeat import Run
from ._session import CassetteRun


@dataclass
class ItemState:
    """One test's cassette bookkeeping, from its collection to its teardown report."""

    problem: str | None = None  # why it may not use its cassette (it errors at setup): found at collection
    cassette: str | None = None  # its cassette, relative to the cassette dir, once its fixture was set up
    run: CassetteRun | None = None  # its live run (record, verify or repeat) under --probe
    recorded_by: str | None = None  # verifying a cassette whose manifest names another test
    pending: PendingRecording | None = None  # a recording waiting for the teardown's outcome
    passed: bool = False  # its call passed
    misses: MissLog | None = None  # the cassette errors the app caught while it ran
    repeats: list[Run] = field(default_factory=list)  # under --probe=repeat:N, what each run generated
