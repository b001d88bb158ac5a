"""What a run did with cassettes, mergeable across xdist workers, and the lines that summarise it.

Only tests that were selected and ran are counted (a test is counted once its cassette fixture was
set up). Cassettes are named by their path relative to the cassette directory.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ._settings import Mode, Settings

CASSETTE_MARKER_FILES = ("manifest.json",)


@dataclass
class Report:
    """One process's (or, merged, the whole run's) cassette activity."""

    mode: str = Mode.REPLAY.value
    replayed: dict[str, list[str]] = field(default_factory=dict)  # cassette -> test ids
    recorded: dict[str, int] = field(default_factory=dict)  # cassette -> bytes written
    not_written: dict[str, str] = field(default_factory=dict)  # cassette -> the failed test's id
    teardown_failed: dict[str, str] = field(default_factory=dict)  # cassette -> id of a test that passed, but
    # whose fixture teardown failed: not written either
    missing: dict[str, str] = field(default_factory=dict)  # cassette -> test id
    verified: dict[str, dict] = field(default_factory=dict)  # test id -> VerifyResult.to_dict() + "cassette"
    repeated: dict[str, dict] = field(default_factory=dict)  # test id -> _repeat.measure() of its N runs
    repeats: int = 0  # N of --probe=repeat:N
    repeat_max_distinct: int | None = None
    expected: list[str] = field(default_factory=list)  # cassettes of every collected test
    collected_modules: list[str] = field(default_factory=list)  # cassette dirs of collected modules
    seconds: float = 0.0  # wall time of the tests that used a cassette
    tests: int = 0  # how many such tests ran

    # -- recording --------------------------------------------------------------------------------

    def add_replayed(self, cassette: str, test: str) -> None:
        self.replayed.setdefault(cassette, []).append(test)

    def add_recorded(self, cassette: str, size: int) -> None:
        self.recorded[cassette] = size

    @property
    def used(self) -> set[str]:
        verified = {v["cassette"] for v in self.verified.values() if "cassette" in v}
        return set(self.replayed) | set(self.recorded) | set(self.not_written) | set(self.teardown_failed) | verified

    # -- xdist ------------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Report:
        return cls(**json.loads(text))

    def merge(self, other: Report) -> None:
        """Add a worker's report to this one."""
        for cassette, tests in other.replayed.items():
            self.replayed.setdefault(cassette, []).extend(tests)
        self.recorded.update(other.recorded)
        self.not_written.update(other.not_written)
        self.teardown_failed.update(other.teardown_failed)
        self.missing.update(other.missing)
        self.verified.update(other.verified)
        self.repeated.update(other.repeated)
        self.expected = sorted(set(self.expected) | set(other.expected))
        self.collected_modules = sorted(set(self.collected_modules) | set(other.collected_modules))
        self.seconds += other.seconds
        self.tests += other.tests

    # -- summary ----------------------------------------------------------------------------------

    @property
    def bytes_written(self) -> int:
        return sum(self.recorded.values())

    def unused(self, on_disk: list[str], whole_run: bool) -> list[str]:
        """Cassettes on disk that no test of this run used.

        A cassette that a collected test would use but that did not run (deselected, skipped) is not
        unused. Outside the collected modules' directories a cassette is only judged when the run
        collected the whole test suite (``whole_run``): a partial run cannot know who uses it.
        """
        keep = self.used | set(self.expected) | set(self.missing)
        modules = [PurePosixPath(m) for m in self.collected_modules]
        result = []
        for cassette in on_disk:
            if cassette in keep:
                continue
            path = PurePosixPath(cassette)
            if whole_run or any(path.is_relative_to(m) for m in modules):
                result.append(cassette)
        return sorted(result)

    def unused_in(self, cassette_dir: Path, whole_run: bool) -> list[str]:
        """The cassettes under ``cassette_dir`` that no test of this run used (see :meth:`unused`)."""
        return self.unused(cassettes_on_disk(cassette_dir), whole_run=whole_run)

    def lines(self, unused: list[str] | None = None) -> list[str]:
        """The session summary: one line per kind of activity, then the verify table."""
        label = f"probe=repeat:{self.repeats}" if self.mode == Mode.REPEAT.value else Mode(self.mode).label
        out = [f"mode: {label}; {self.tests} test(s) used cassettes in {self.seconds:.2f} s"]
        if self.replayed:
            out.append(f"replayed: {len(self.replayed)} cassette(s)")
        if self.recorded:
            out.append(f"recorded: {len(self.recorded)} cassette(s), {format_size(self.bytes_written)} written")
        if self.not_written:
            out.append(f"not written (test failed; the cassette on disk, if any, unchanged): {len(self.not_written)}")
            out += [f"  {c}  ({t})" for c, t in sorted(self.not_written.items())]
        if self.teardown_failed:
            out.append("not written (test passed, a fixture teardown failed; the cassette on disk, if any, "
                       f"unchanged): {len(self.teardown_failed)}")
            out += [f"  {c}  ({t})" for c, t in sorted(self.teardown_failed.items())]
        if self.missing:
            out.append(f"missing: {len(self.missing)} cassette(s)")
            out += [f"  {c}  ({t})" for c, t in sorted(self.missing.items())]
        if self.verified:
            out += self.verify_lines()
        if self.mode == Mode.REPEAT.value:
            out += self.repeat_lines()
        if unused is not None:
            out.append(f"unused: {len(unused)} cassette(s) on disk that no test of this run used")
            out += [f"  {c}" for c in unused]
        return out

    def verify_lines(self) -> list[str]:
        """A count per status, then one row per test: where it first diverged and by how much."""
        counts: dict[str, int] = {}
        for result in self.verified.values():
            counts[result.get("status", "?")] = counts.get(result.get("status", "?"), 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        out = [f"verified: {len(self.verified)} test(s): {summary}"]
        header = ("test", "status", "step", "recorded", "live", "max|dlogit|")
        rows = [header] + [
            (test, str(r.get("status")), _cell(r.get("first_divergent_step")),
             _token(r.get("recorded_token"), r.get("recorded_text")), _token(r.get("live_token"), r.get("live_text")),
             _cell(r.get("max_logit_diff")))
            for test, r in sorted(self.verified.items())
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        out += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        moved = {test: r for test, r in sorted(self.verified.items()) if r.get("recorded_by")}
        if moved:
            out.append(f"recorded by another test: {len(moved)} cassette(s) (moved or copied? verified all the same; "
                       "re-record each with pytest --probe=all TEST)")
            out += [f"  {test}: {r.get('cassette')} names {r['recorded_by']}" for test, r in moved.items()]
        errors = {test: r for test, r in sorted(self.verified.items()) if r.get("status") == "error"}
        if errors:
            out.append(f"comparison failed: {len(errors)} test(s)")
            out += [f"  {test}: {r.get('reason')}" for test, r in errors.items()]
        return out

    def verify_json(self) -> str:
        return json.dumps({"mode": self.mode, "cassettes": self.verified}, indent=2, sort_keys=True)

    def repeat_lines(self) -> list[str]:
        """Per test: its runs, how many distinct token sequences they made, where they first part."""
        limit = "" if self.repeat_max_distinct is None else f" (at most {self.repeat_max_distinct} allowed)"
        varied = sum(1 for r in self.repeated.values() if r["distinct"] > 1)
        out = [f"repeated: {len(self.repeated)} test(s) x {self.repeats} live runs: {varied} with more than one "
               f"token sequence{limit}"]
        if not self.repeated:
            return out
        header = ("test", "runs", "distinct", "step", "answer:step", "tokens there (runs)")
        rows = [header] + [
            (test, str(r["runs"]), str(r["distinct"]), _cell(r["first_parting_step"]),
             "-" if r["answer"] is None else f"{r['answer']}:{r['answer_step']}", _parting(r["parting"]))
            for test, r in sorted(self.repeated.items())
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        out += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        return out

    def repeat_json(self) -> str:
        return json.dumps({"mode": self.mode, "runs": self.repeats, "max_distinct": self.repeat_max_distinct,
                           "tests": self.repeated}, indent=2, sort_keys=True)

    def report_json(self) -> str:
        """The JSON report of this run's mode (verify's or repeat's)."""
        return self.repeat_json() if self.mode == Mode.REPEAT.value else self.verify_json()


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _parting(parting: list[dict]) -> str:
    if not parting:
        return "-"
    return ", ".join(f"{'end' if p['token'] is None else _token(p['token'], p.get('text'))} ({p['runs']})"
                     for p in parting)


def _token(token: int | None, text: str | None) -> str:
    if token is None:
        return "-"
    return f"{token} {text!r}" if text is not None else str(token)


def format_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def cassettes_on_disk(cassette_dir: Path) -> list[str]:
    """Every cassette under ``cassette_dir`` (a directory holding a manifest), hidden ones excluded."""
    if not cassette_dir.is_dir():
        return []
    found = []
    for marker in CASSETTE_MARKER_FILES:
        for manifest in cassette_dir.rglob(marker):
            rel = manifest.parent.relative_to(cassette_dir)
            if rel.parts and not any(part.startswith(".") for part in rel.parts):
                found.append(rel.as_posix())
    return sorted(set(found))


def rename_hint(missing: str, unused: list[str], cassette_dir: Path, invocation_dir: Path, shown: int = 5) -> str:
    """For a test whose cassette is missing: the unused cassettes that may be its old one, and the move.

    Candidates in the same directory (module or class) come first, then those with a similar name,
    each group by name similarity; "" when no cassette on disk is unused.
    """
    if not unused:
        return ""
    target = PurePosixPath(missing)

    def rank(candidate: str) -> tuple[int, float, str]:
        path = PurePosixPath(candidate)
        similar = difflib.SequenceMatcher(None, path.name, target.name).ratio()
        return (0 if path.parent == target.parent else 1, -similar, candidate)

    ordered = sorted(unused, key=rank)
    best = ordered[0]
    if PurePosixPath(best).parent != target.parent and PurePosixPath(best).name != target.name:
        close = difflib.get_close_matches(target.name, [PurePosixPath(c).name for c in ordered], n=1, cutoff=0.6)
        if not close:
            return ""  # nothing on disk looks like this test's old cassette
    old = os.path.relpath(cassette_dir / best, invocation_dir)
    new = os.path.relpath(cassette_dir / missing, invocation_dir)
    listed = "".join(f"\n  {c}" for c in ordered[:shown])
    more = f"\n  ... and {len(ordered) - shown} more" if len(ordered) > shown else ""
    return (
        f"\nNo collected test uses {'this cassette' if len(ordered) == 1 else 'these cassettes'} on disk:"
        f"{listed}{more}\nIf the test was renamed from {best}, move its cassette instead of re-recording: "
        f"git mv {old} {new}"
    )


def makes_json_report(settings: Settings, report: Report) -> bool:
    """Whether this run writes a JSON report: a verify run that verified a test, or a repeat run."""
    return (settings.mode is Mode.VERIFY and bool(report.verified)) or settings.mode is Mode.REPEAT


def write_json_report(settings: Settings, report: Report) -> None:
    """Write verify's or repeat's JSON report to ``settings.report_path``, when this run makes one."""
    if makes_json_report(settings, report):
        settings.report_path.parent.mkdir(parents=True, exist_ok=True)
        settings.report_path.write_text(report.report_json() + "\n", encoding="utf-8")


def save_unused_report(settings: Settings, report: Report, whole_run: bool, ran_to_end: bool) -> None:
    """After a plain run over the whole suite (``whole_run``) that ran to the end (``ran_to_end``: its tests
    passed or failed): the cassettes no test used, for ``chatstream cassette prune``. A partial or interrupted
    run cannot know who uses a cassette, and a read-only checkout has nothing to prune: nothing is written."""
    if settings.mode is not Mode.REPLAY or not whole_run or not ran_to_end or not settings.cassette_dir.is_dir():
        return
    from chatstream.cassettes._unused_report import write_unused_report

    with contextlib.suppress(OSError):
        write_unused_report(settings.cassette_dir, report.unused_in(settings.cassette_dir, True))


def summary_lines(settings: Settings, report: Report, whole_run: bool) -> list[str]:
    """The terminal summary's lines; none when the run used no cassette and asked nothing about them."""
    if not report.tests and not settings.list_unused and not settings.live:
        return []
    unused = report.unused_in(settings.cassette_dir, whole_run) if settings.list_unused else None
    lines = report.lines(unused)
    if makes_json_report(settings, report):
        lines.append(f"{settings.mode.value} report: {settings.report_path}")
    return lines
