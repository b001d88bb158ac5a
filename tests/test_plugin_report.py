"""pytest_chatstream._report: counting, merging worker reports, unused cassettes, the summary lines."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_chatstream._report import Report, cassettes_on_disk, format_size, rename_hint


def _worker(n: int) -> Report:
    report = Report(mode="missing", expected=[f"m/t{n}"], collected_modules=["m"], seconds=1.5, tests=2)
    report.add_replayed(f"m/t{n}", f"m.py::t{n}")
    report.add_replayed("shared", f"m.py::s{n}")
    report.add_recorded(f"m/r{n}", 1000 * n)
    return report


def test_worker_reports_merge_through_json() -> None:
    merged = Report(mode="missing")
    for n in (1, 2):
        merged.merge(Report.from_json(_worker(n).to_json()))
    assert sorted(merged.replayed) == ["m/t1", "m/t2", "shared"]
    assert merged.replayed["shared"] == ["m.py::s1", "m.py::s2"]
    assert merged.recorded == {"m/r1": 1000, "m/r2": 2000} and merged.bytes_written == 3000
    assert merged.expected == ["m/t1", "m/t2"] and merged.tests == 4 and merged.seconds == 3.0


def test_unused_counts_only_what_no_test_of_the_run_used() -> None:
    report = Report(expected=["m/deselected"], collected_modules=["m"])
    report.add_replayed("m/used", "m.py::used")
    on_disk = ["m/used", "m/deselected", "m/stale", "other/x", "named"]
    assert report.unused(on_disk, whole_run=False) == ["m/stale"]  # other modules: not judged
    assert report.unused(on_disk, whole_run=True) == ["m/stale", "named", "other/x"]


def test_summary_lines_for_each_activity() -> None:
    report = Report(mode="all", tests=3, seconds=2.0)
    report.add_recorded("m/a", 2048)
    report.not_written["m/b"] = "m.py::b"
    report.missing["m/c"] = "m.py::c"
    lines = report.lines(unused=["m/old"])
    assert lines[0] == "mode: probe=all; 3 test(s) used cassettes in 2.00 s"
    assert "recorded: 1 cassette(s), 2.0 KiB written" in lines
    assert "  m/b  (m.py::b)" in lines and "  m/c  (m.py::c)" in lines
    assert lines[-2:] == ["unused: 1 cassette(s) on disk that no test of this run used", "  m/old"]


def test_verify_table_and_json() -> None:
    report = Report(mode="verify")
    report.verified["m.py::same"] = {"status": "identical", "cassette": "m/same", "max_logit_diff": 0.0}
    report.verified["m.py::diff"] = {
        "status": "diverged", "first_divergent_step": 3, "recorded_token": 17, "recorded_text": "cat",
        "live_token": 99, "live_text": "dog", "max_logit_diff": 1.25, "cassette": "m/diff",
    }
    lines = report.verify_lines()
    assert lines[0] == "verified: 2 test(s): 1 diverged, 1 identical"
    assert lines[1].split() == ["test", "status", "step", "recorded", "live", "max|dlogit|"]
    assert lines[2].split() == ["m.py::diff", "diverged", "3", "17", "'cat'", "99", "'dog'", "1.25"]
    assert lines[3].split() == ["m.py::same", "identical", "-", "-", "-", "0"]
    assert report.used == {"m/same", "m/diff"}
    assert json.loads(report.verify_json())["cassettes"]["m.py::diff"]["first_divergent_step"] == 3


def test_teardown_failures_moved_cassettes_and_comparison_errors_are_listed_and_merged() -> None:
    worker = Report(mode="verify")
    worker.teardown_failed["m/t"] = "m.py::t"
    worker.verified["m.py::moved"] = {"status": "identical", "cassette": "m/moved", "recorded_by": "m.py::old"}
    worker.verified["m.py::broken"] = {"status": "error", "cassette": "m/broken", "reason": "CassetteFormatError: x"}
    merged = Report(mode="verify")
    merged.merge(Report.from_json(worker.to_json()))
    lines = merged.lines()
    assert "not written (test passed, a fixture teardown failed; the cassette on disk, if any, unchanged): 1" in lines
    assert "  m/t  (m.py::t)" in lines and "m/t" in merged.used
    assert lines[-4].startswith("recorded by another test: 1 cassette(s)")
    assert lines[-3:] == ["  m.py::moved: m/moved names m.py::old", "comparison failed: 1 test(s)",
                          "  m.py::broken: CassetteFormatError: x"]


def test_format_size() -> None:
    assert [format_size(n) for n in (10, 1536, 3 * 1024 * 1024)] == ["10 B", "1.5 KiB", "3.0 MiB"]


def test_cassettes_on_disk_skips_hidden_staging_dirs(tmp_path: Path) -> None:
    for rel in ("a/t1", "a/b/t2", "a/.t3.recording-x", "named"):
        (tmp_path / rel).mkdir(parents=True)
        (tmp_path / rel / "manifest.json").write_text("{}")
    (tmp_path / "a" / "not-a-cassette").mkdir()
    assert cassettes_on_disk(tmp_path) == ["a/b/t2", "a/t1", "named"]
    assert cassettes_on_disk(tmp_path / "absent") == []


def test_rename_hint_points_at_the_likeliest_unused_cassette(tmp_path: Path) -> None:
    cassettes = tmp_path / "fixtures" / "cassettes"
    unused = ["other/test_greeting_old", "tests/test_chat/test_bye", "tests/test_chat/test_greeting"]
    hint = rename_hint("tests/test_chat/test_greetings", unused, cassettes, tmp_path)
    lines = hint.strip().splitlines()
    assert lines[1:4] == ["  tests/test_chat/test_greeting", "  tests/test_chat/test_bye", "  other/test_greeting_old"]
    assert lines[-1].endswith(
        "git mv fixtures/cassettes/tests/test_chat/test_greeting fixtures/cassettes/tests/test_chat/test_greetings"
    )


def test_rename_hint_says_nothing_without_a_likely_candidate(tmp_path: Path) -> None:
    assert rename_hint("m/test_new", [], tmp_path, tmp_path) == ""
    assert rename_hint("m/test_new", ["elsewhere/unrelated_name"], tmp_path, tmp_path) == ""
    assert "git mv" in rename_hint("m2/test_new", ["m1/test_new"], tmp_path, tmp_path)  # a moved module


def _settings(tmp_path: Path, probe: str | None = None, list_unused: bool = False):
    from pytest_chatstream._settings import resolve_settings

    return resolve_settings(
        probe=probe, cli_model=None, cli_device=None, cli_fidelity=None, cli_report=None, list_unused=list_unused,
        ini_cassette_dir="cassettes", ini_model=None, ini_device=None, ini_fidelity=None, ini_missing=None,
        ini_report=None, invocation_dir=tmp_path, rootpath=tmp_path,
    )


def _cassettes(tmp_path: Path, *rels: str) -> None:
    for rel in rels:
        (tmp_path / "cassettes" / rel).mkdir(parents=True)
        (tmp_path / "cassettes" / rel / "manifest.json").write_text("{}")


def test_unused_in_reads_the_cassette_dir(tmp_path: Path) -> None:
    _cassettes(tmp_path, "m/used", "m/old", "other/x")
    report = Report(collected_modules=["m"])
    report.add_replayed("m/used", "m.py::used")
    assert report.unused_in(tmp_path / "cassettes", whole_run=False) == ["m/old"]
    assert report.unused_in(tmp_path / "cassettes", whole_run=True) == ["m/old", "other/x"]


def test_summary_lines_only_for_a_run_that_used_or_asked_about_cassettes(tmp_path: Path) -> None:
    from pytest_chatstream._report import summary_lines

    _cassettes(tmp_path, "m/old")
    assert summary_lines(_settings(tmp_path), Report(), whole_run=True) == []
    listed = summary_lines(_settings(tmp_path, list_unused=True), Report(), whole_run=True)
    assert listed[-2:] == ["unused: 1 cassette(s) on disk that no test of this run used", "  m/old"]
    assert summary_lines(_settings(tmp_path, list_unused=True), Report(), whole_run=False)[-1] == \
        "unused: 0 cassette(s) on disk that no test of this run used"  # a partial run judges no other module
    live = summary_lines(_settings(tmp_path, "all"), Report(mode="all"), whole_run=True)
    assert live == ["mode: probe=all; 0 test(s) used cassettes in 0.00 s"]  # a live run always says what it did
    verify = Report(mode="verify", tests=1)
    verify.verified["m.py::a"] = {"status": "identical", "cassette": "m/a"}
    lines = summary_lines(_settings(tmp_path, "verify"), verify, whole_run=True)
    assert lines[-1] == f"verify report: {tmp_path / 'chatstream-verify-report.json'}"


def test_the_json_report_is_written_for_verify_and_repeat_runs_only(tmp_path: Path) -> None:
    from pytest_chatstream._report import write_json_report

    path = tmp_path / "chatstream-verify-report.json"
    write_json_report(_settings(tmp_path, "verify"), Report(mode="verify"))
    assert not path.exists()  # nothing verified: no report
    report = Report(mode="verify")
    report.verified["m.py::a"] = {"status": "identical", "cassette": "m/a"}
    write_json_report(_settings(tmp_path, "verify"), report)
    assert json.loads(path.read_text())["cassettes"] == report.verified
    write_json_report(_settings(tmp_path, "repeat:2"), Report(mode="repeat", repeats=2))
    assert json.loads((tmp_path / "chatstream-repeat-report.json").read_text())["runs"] == 2
    write_json_report(_settings(tmp_path, "all"), Report(mode="all"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chatstream-repeat-report.json",
                                                          "chatstream-verify-report.json"]


def test_the_unused_report_only_after_a_whole_replay_run_that_ran_to_the_end(tmp_path: Path) -> None:
    from chatstream.cassettes._unused_report import UNUSED_REPORT_NAME
    from pytest_chatstream._report import save_unused_report

    _cassettes(tmp_path, "m/used", "m/old")
    report = Report()
    report.add_replayed("m/used", "m.py::used")
    written = tmp_path / "cassettes" / UNUSED_REPORT_NAME
    for settings, whole_run, ran_to_end in [(_settings(tmp_path), False, True), (_settings(tmp_path), True, False),
                                            (_settings(tmp_path, "all"), True, True)]:
        save_unused_report(settings, report, whole_run, ran_to_end)
        assert not written.exists()
    save_unused_report(_settings(tmp_path), report, whole_run=True, ran_to_end=True)
    assert json.loads(written.read_text())["unused"] == ["m/old"]
    save_unused_report(_settings(tmp_path / "elsewhere"), report, True, True)  # no cassette dir: nothing to prune
    assert not (tmp_path / "elsewhere").exists()
