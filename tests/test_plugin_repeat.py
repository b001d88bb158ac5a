"""``pytest --probe=repeat:N`` end to end: each test's live generation N times, no cassette written, the
distinct token sequences counted per test (table and JSON report), a limit that fails the test above it.

A seeded chat samples the same tokens on every run here (CPU); a conftest that gives every run a new
seed stands in for a nondeterministic model or device.
"""

from __future__ import annotations

import json

import pytest
from _chat_project import CONFTEST, DIST_PARAMS, make_chat_project

NEW_SEED_EACH_RUN = CONFTEST.replace(
    'return {"seed": 7, "max_new_tokens": 16, "temperature": 0.9}',
    'return {"seed": next(SEEDS), "max_new_tokens": 16, "temperature": 4.0}',
).replace("import torch\n", "import itertools\n\nimport torch\n\nSEEDS = itertools.count(100)\n")


def test_seeded_tests_produce_one_sequence_and_write_no_cassette(pytester: pytest.Pytester) -> None:
    project = make_chat_project(pytester)
    result = pytester.runpytest("--probe=repeat:3", "--probe-repeat-max-distinct=1", "-k", "greeting or two_turns")
    result.assert_outcomes(passed=2, deselected=2)
    result.stdout.fnmatch_lines([
        "mode: probe=repeat:3; 2 test(s) used cassettes in *",
        "repeated: 2 test(s) x 3 live runs: 0 with more than one token sequence (at most 1 allowed)",
        "  test*runs*distinct*step*answer:step*tokens there (runs)",
        "  test_chat.py::test_greeting   3*1*-*-*-",
        "  test_chat.py::test_two_turns  3*1*-*-*-",
        "repeat report: *chatstream-repeat-report.json",
    ])
    assert not (project / "fixtures" / "cassettes").exists()  # nothing recorded
    report = json.loads((project / "chatstream-repeat-report.json").read_text())
    assert report["runs"] == 3 and report["max_distinct"] == 1
    two_turns = report["tests"]["test_chat.py::test_two_turns"]
    assert two_turns["distinct"] == 1 and two_turns["sequence_counts"] == [3]
    assert len(set(two_turns["tokens_per_run"])) == 1 and two_turns["tokens_per_run"][0] > 2  # two answers


@DIST_PARAMS
def test_runs_that_differ_are_counted_and_fail_above_the_limit(pytester: pytest.Pytester, dist: list[str]) -> None:
    project = make_chat_project(pytester)
    pytester.makeconftest(NEW_SEED_EACH_RUN)
    result = pytester.runpytest("--probe=repeat:4", "--probe-repeat-max-distinct", "1", "-k",
                                "greeting or two_turns", *dist)
    result.assert_outcomes(failed=2, deselected=0 if dist else 2)
    result.stdout.fnmatch_lines([
        "*test_chat.py::test_greeting: 4 live runs produced * distinct token sequences (at most 1 allowed by "
        "--probe-repeat-max-distinct / chatstream_repeat_max_distinct); they first part at step *",
        "repeated: 2 test(s) x 4 live runs: 2 with more than one token sequence (at most 1 allowed)",
    ])
    report = json.loads((project / "chatstream-repeat-report.json").read_text())["tests"]
    assert sorted(report) == ["test_chat.py::test_greeting", "test_chat.py::test_two_turns"]  # merged
    for result_of_test in report.values():
        assert result_of_test["runs"] == 4 and 2 <= result_of_test["distinct"] <= 4
        assert sum(result_of_test["sequence_counts"]) == 4
        assert result_of_test["first_parting_step"] is not None
        assert sum(p["runs"] for p in result_of_test["parting"]) == 4 and len(result_of_test["parting"]) >= 2

    # without a limit the same runs are only measured
    unlimited = pytester.runpytest("--probe=repeat:4", "-k", "greeting", *dist)
    unlimited.assert_outcomes(passed=1, deselected=0 if dist else 3)
    unlimited.stdout.fnmatch_lines(["repeated: 1 test(s) x 4 live runs: 1 with more than one token sequence"])


def test_a_failing_run_stops_the_repeats_and_is_the_outcome(pytester: pytest.Pytester) -> None:
    make_chat_project(pytester)
    pytester.makepyfile(test_chat="""
        RUNS = []

        async def test_greeting(chatstream_client):
            RUNS.append(1)
            await chatstream_client.post("/chat_stream", json={"user_input": "Hello", "regenerate": False})
            assert len(RUNS) < 2, "fails on the second run"
    """)
    result = pytester.runpytest("--probe=repeat:5")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: fails on the second run*", "*run 2 of 5 failed*",
                                 "repeated: 0 test(s) x 5 live runs: *"])


def test_repeat_needs_a_count(pytester: pytest.Pytester) -> None:
    make_chat_project(pytester)
    result = pytester.runpytest("--probe=repeat:1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--probe='repeat:1': repeat needs how many times to run each test, at least 2*"])


def test_measure_counts_sequences_and_finds_the_first_parting_step() -> None:
    from pytest_chatstream._repeat import measure, parting_summary

    same = measure([[[1, 2, 3], [4, 5]]] * 3)
    assert (same["distinct"], same["first_parting_step"], same["parting"]) == (1, None, [])
    runs = [[[1, 2, 3], [4, 5]], [[1, 2, 3], [4, 6]], [[1, 2, 3], [4, 5]], [[1, 2, 3], [4]]]
    result = measure(runs, describe=lambda token: f"t{token}")
    assert result["distinct"] == 3 and result["sequence_counts"] == [2, 1, 1]
    assert (result["first_parting_step"], result["answer"], result["answer_step"]) == (4, 1, 1)
    assert result["parting"] == [{"token": 5, "text": "t5", "runs": 2}, {"token": 6, "text": "t6", "runs": 1},
                                 {"token": None, "text": None, "runs": 1}]
    assert parting_summary(result) == "step 4 (answer 1, step 1): 5 't5', 6 't6', end of answers in 2/1/1 runs"
    with pytest.raises(ValueError, match="runs"):
        measure([])


def test_add_run_measures_after_the_last_run_and_fails_above_the_limit():
    """pytest_chatstream._repeat.add_run, plain code: what the plugin calls after each run of a test."""
    from pytest_chatstream._repeat import add_run

    runs: list = []
    assert add_run(runs, [[1, 2, 3]], lambda token: None, 3, "t.py::a", 1) == (None, None)
    assert add_run(runs, [[1, 2, 4]], lambda token: None, 3, "t.py::a", 1) == (None, None)
    result, failure = add_run(runs, [[1, 2, 3]], lambda token: None, 3, "t.py::a", 1)
    assert result["test"] == "t.py::a" and result["runs"] == 3 and result["distinct"] == 2
    assert failure.startswith("t.py::a: 3 live runs produced 2 distinct token sequences (at most 1 allowed")
    assert add_run([[[1]]], [[1]], lambda token: None, 2, "t.py::b", 1)[1] is None  # one sequence: within
    assert add_run([[[1]]], [[2]], lambda token: None, 2, "t.py::b", None)[1] is None  # no limit

def test_a_token_the_recorded_calls_cannot_spell_is_decoded_with_the_live_tokenizer(tmp_path) -> None:
    from _probe_support import ask, bundled

    from chatstream.cassettes.recording import ProbeRecorder
    from chatstream.engine.generation import ChatGenerator, GenerationParams
    from chatstream.engine.token_sampler import TokenSamplerIsok
    from pytest_chatstream._repeat import recorded_run

    model, tokenizer = bundled()
    with ProbeRecorder(tmp_path / "run") as recorder:
        m, t, s = recorder.wrap(model, tokenizer, TokenSamplerIsok(seed=1))
        ChatGenerator(m, t, "cpu", GenerationParams(max_new_tokens=20, temperature=1.0, seed=3), s).generate_text(
            ask(t, "Hello"))
    (answer,), describe = recorded_run(tmp_path / "run")
    eos = answer[-1]
    assert eos == tokenizer.eos_token_id and describe(eos) == f"⟨{eos}⟩"  # the recorded calls never decoded it
    (answer,), describe = recorded_run(tmp_path / "run", tokenizer)
    assert describe(eos) == tokenizer.decode([eos]) and "⟨" not in describe(eos)
    assert describe(answer[0]) == tokenizer.decode([answer[0]])  # the others keep their recorded text


class FakeRun:
    """A CassetteRun's recorded_run(): the answers one live run generated, and a token decoder."""

    def __init__(self, tokens: list[list[int]]) -> None:
        self.tokens = tokens

    def recorded_run(self):
        return self.tokens, lambda token: f"t{token}"


def test_add_live_run_notes_the_measurement_after_the_last_run():
    from pytest_chatstream._repeat import add_live_run
    from pytest_chatstream._report import Report

    report, runs = Report(mode="repeat", repeats=3), []
    assert add_live_run(runs, FakeRun([[1, 2]]), report, "t.py::a", 3, 1) is None
    assert add_live_run(runs, FakeRun([[1, 3]]), report, "t.py::a", 3, 1) is None
    assert report.repeated == {}  # not before the last run
    failure = add_live_run(runs, FakeRun([[1, 2]]), report, "t.py::a", 3, 1)
    assert report.repeated["t.py::a"]["distinct"] == 2 and report.repeated["t.py::a"]["test"] == "t.py::a"
    assert report.repeated["t.py::a"]["parting"] == [{"token": 2, "text": "t2", "runs": 2},
                                                     {"token": 3, "text": "t3", "runs": 1}]
    assert failure.startswith("t.py::a: 3 live runs produced 2 distinct token sequences (at most 1 allowed")


class FakeReport:
    def __init__(self, failed: bool) -> None:
        self.failed, self.sections = failed, []


def test_repeated_reports_stop_at_the_first_failing_run_and_say_which():
    from pytest_chatstream._repeat import repeated_reports

    outcomes = iter([False, True, False, False])
    calls: list[bool] = []

    def run_once(last: bool) -> list[FakeReport]:
        calls.append(last)
        return [FakeReport(False), FakeReport(next(outcomes))]

    reports = repeated_reports(run_once, 4)
    assert calls == [False, False]  # the second run failed: no third
    assert [r.sections for r in reports] == [[("chatstream repeat", "run 2 of 4 failed")]] * 2


def test_repeated_reports_of_runs_that_pass_are_the_last_ones_unmarked():
    from pytest_chatstream._repeat import repeated_reports

    calls: list[bool] = []

    def run_once(last: bool) -> list[FakeReport]:
        calls.append(last)
        return [FakeReport(False)]

    reports = repeated_reports(run_once, 3)
    assert calls == [False, False, True] and reports[0].sections == []
    failing_last = repeated_reports(lambda last: [FakeReport(last)], 2)
    assert failing_last[0].sections == []  # the last run is the outcome; nothing to add
