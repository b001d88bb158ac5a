"""The plugin's modes end to end: plain pytest (replay), --probe, --probe=missing, --probe=verify.

Each case builds a small project (tests/_chat_project.py) on a copy of the bundled tiny model, runs
pytest in it with pytester, and checks the outcome, the report and the cassettes on disk. The cases
that involve several processes run once plainly and once under ``-n 2``.
"""

from __future__ import annotations

import json
import shutil

import pytest
from _chat_project import DIST_PARAMS, SHARED_TESTS, alter_first_token, cassette_bytes, make_chat_project, outputs

CHAT_TEST_NAMES = ["test_chat_stream_direct", "test_greeting", "test_sync_client", "test_two_turns"]


@DIST_PARAMS
def test_probe_then_replay_streams_identical_bytes_without_the_model(
    pytester: pytest.Pytester, dist: list[str]
) -> None:
    project = make_chat_project(pytester)
    pytester.makepyfile(test_shared=SHARED_TESTS)  # two tests, one cassette: recorded once, by either
    recorded = pytester.runpytest("--probe", *dist)
    recorded.assert_outcomes(passed=6)
    recorded.stdout.fnmatch_lines([
        "*chatstream cassettes*",
        "mode: probe=all; 6 test(s) used cassettes in *",
        "replayed: 1 cassette(s)",
        "recorded: 5 cassette(s), *written",
    ])
    live = outputs(project)
    assert sorted(live) == sorted([*CHAT_TEST_NAMES, "test_first", "test_second"]) and all(live.values())
    assert live["test_first"] == live["test_second"]
    cassettes = project / "fixtures" / "cassettes"
    assert sorted(p.parent.relative_to(cassettes).as_posix() for p in cassettes.rglob("manifest.json")) == [
        "shared/greeting", *(f"test_chat/{name}" for name in CHAT_TEST_NAMES)
    ]
    assert not [p for p in cassettes.rglob(".*")]  # no staging directory left behind

    shutil.rmtree(project / "model")  # replay loads nothing: without the model it still passes
    replayed = pytester.runpytest("--chatstream-unused", *dist)
    replayed.assert_outcomes(passed=6)
    replayed.stdout.fnmatch_lines([
        "mode: replay; 6 test(s) used cassettes in *",
        "replayed: 5 cassette(s)",
        "unused: 0 cassette(s) on disk that no test of this run used",
    ])
    assert outputs(project) == live


def test_compact_cassettes_stay_small(pytester: pytest.Pytester) -> None:
    project = make_chat_project(pytester)
    pytester.runpytest("--probe", "-k", "greeting").assert_outcomes(passed=1, deselected=3)
    cassette = cassette_bytes(project / "fixtures" / "cassettes" / "test_chat" / "test_greeting")
    assert json.loads(cassette["manifest.json"])["fidelity"] == "compact"
    assert sum(map(len, cassette.values())) < 40_000


def test_probe_missing_records_only_absent_cassettes(pytester: pytest.Pytester) -> None:
    project = make_chat_project(pytester)
    pytester.runpytest("--probe", "-k", "greeting or two_turns").assert_outcomes(passed=2, deselected=2)
    cassettes = project / "fixtures" / "cassettes"
    before = cassette_bytes(cassettes)
    result = pytester.runpytest("--probe=missing")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["mode: probe=missing; *", "replayed: 2 cassette(s)", "recorded: 2 cassette(s), *"])
    after = cassette_bytes(cassettes)
    assert {k: v for k, v in after.items() if k in before} == before  # byte-identical
    assert {k.split("/")[1] for k in after} == set(CHAT_TEST_NAMES)


def test_missing_cassette_fails_naming_the_path_and_the_command(pytester: pytest.Pytester) -> None:
    make_chat_project(pytester)
    result = pytester.runpytest("-k", "greeting")
    result.assert_outcomes(errors=1, deselected=3)
    result.stdout.fnmatch_lines([
        "*CassetteNotFound: no cassette for test_chat.py::test_greeting at fixtures/cassettes/test_chat/"
        "test_greeting; record it on a machine with the model: "
        "pytest --probe=missing --probe-model=PATH 'test_chat.py::test_greeting'",
        "missing: 1 cassette(s)",
        "  test_chat/test_greeting  (test_chat.py::test_greeting)",
    ])


def test_missing_cassette_can_skip_instead(pytester: pytest.Pytester) -> None:
    make_chat_project(pytester, ini_extra="chatstream_missing_cassette = skip\n")
    result = pytester.runpytest("-rs", "-k", "greeting")
    result.assert_outcomes(skipped=1, deselected=3)
    result.stdout.fnmatch_lines(["SKIPPED*no cassette for test_chat.py::test_greeting*"])


def test_a_failing_test_keeps_its_old_cassette(pytester: pytest.Pytester) -> None:
    project = make_chat_project(pytester)
    pytester.runpytest("--probe", "-k", "greeting").assert_outcomes(passed=1, deselected=3)
    cassette = project / "fixtures" / "cassettes" / "test_chat" / "test_greeting"
    before = cassette_bytes(cassette)
    pytester.makepyfile(test_chat="""
        async def test_greeting(chatstream_client):
            await chatstream_client.post("/chat_stream", json={"user_input": "Bye", "regenerate": False})
            assert False, "this test fails"
    """)
    result = pytester.runpytest("--probe")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "not written (test failed; the cassette on disk, if any, unchanged): 1",
        "  test_chat/test_greeting  (test_chat.py::test_greeting)",
    ])
    assert cassette_bytes(cassette) == before
    assert sorted(p.name for p in cassette.parent.iterdir()) == ["test_greeting"]  # no staging left over


@DIST_PARAMS
def test_verify_passes_on_fresh_cassettes_and_reports_a_forged_divergence(
    pytester: pytest.Pytester, dist: list[str]
) -> None:
    project = make_chat_project(pytester)
    pytester.runpytest("--probe", "-k", "greeting or two_turns").assert_outcomes(passed=2, deselected=2)
    cassettes = project / "fixtures" / "cassettes"
    before = cassette_bytes(cassettes)
    deselected = 0 if dist else 2  # xdist's controller does not count deselected tests

    if not dist:  # one run under xdist covers both outcomes below
        fresh = pytester.runpytest("--probe=verify", "-k", "greeting or two_turns")
        fresh.assert_outcomes(passed=2, deselected=2)
        fresh.stdout.fnmatch_lines([
            "verified: 2 test(s): 2 identical",
            "  test*status*step*recorded*live*max|dlogit|",
            "  test_chat.py::test_greeting*identical*",
        ])
        assert cassette_bytes(cassettes) == before  # verify writes no cassette

    alter_first_token(cassettes / "test_chat" / "test_greeting", token=3)
    forged = pytester.runpytest("--probe=verify", "-k", "greeting or two_turns", *dist)
    forged.assert_outcomes(passed=1, failed=1, deselected=deselected)
    forged.stdout.fnmatch_lines([
        "*the live model diverged from the cassette test_chat/test_greeting at step 0: recorded token 3*"
        "Re-record it with: pytest --probe=all 'test_chat.py::test_greeting'",
        "verified: 2 test(s): 1 diverged, 1 identical",
        "  test*status*step*recorded*live*max|dlogit|",
        "  test_chat.py::test_greeting*diverged*0*3 *",
    ])
    report = json.loads((project / "chatstream-verify-report.json").read_text())["cassettes"]
    greeting = report["test_chat.py::test_greeting"]
    assert greeting["status"] == "diverged" and greeting["first_divergent_step"] == 0
    assert greeting["recorded_token"] == 3 and greeting["live_token"] != 3
    assert "live_dir" not in greeting  # the live recording was a temporary directory, gone by now
    assert report["test_chat.py::test_two_turns"]["status"] == "identical"


def test_verify_without_a_cassette_fails_as_missing(pytester: pytest.Pytester) -> None:
    make_chat_project(pytester)
    result = pytester.runpytest("--probe=verify", "-k", "greeting")
    result.assert_outcomes(errors=1, deselected=3)
    result.stdout.fnmatch_lines(["*CassetteNotFound: no cassette for test_chat.py::test_greeting*"])


def test_probe_without_a_model_path_says_how_to_give_one(pytester: pytest.Pytester) -> None:
    make_chat_project(pytester)
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest("--probe", "-k", "greeting")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # one usage error before any test runs, not one per test
    result.stderr.fnmatch_lines(["ERROR: --probe needs a model to record from; pass --probe-model=PATH*"
                                 "Tests that would load it: test_chat.py::test_greeting."])
    assert "error" not in result.stdout.str().lower()


def test_probe_model_and_fidelity_on_the_command_line(pytester: pytest.Pytester) -> None:
    project = make_chat_project(pytester)
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest("--probe", "--probe-model", str(project / "model"), "--probe-device", "cpu",
                                "--probe-fidelity", "fp16", "-k", "greeting")
    result.assert_outcomes(passed=1, deselected=3)
    manifest = json.loads((project / "fixtures/cassettes/test_chat/test_greeting/manifest.json").read_text())
    assert manifest["fidelity"] == "fp16"
    assert manifest["extra"]["test"] == "test_chat.py::test_greeting"


TEARDOWN_FAILS = """\
import pytest


@pytest.fixture
def breaks_on_teardown():
    yield
    raise RuntimeError("teardown broke")


async def test_greeting(breaks_on_teardown, chatstream_client):
    response = await chatstream_client.post("/chat_stream", json={"user_input": "Bye", "regenerate": False})
    assert response.status_code == 200
"""


@DIST_PARAMS
def test_a_test_whose_fixture_teardown_fails_writes_no_cassette(pytester: pytest.Pytester, dist: list[str]) -> None:
    project = make_chat_project(pytester)
    pytester.runpytest("--probe", "-k", "greeting").assert_outcomes(passed=1, deselected=3)
    cassette = project / "fixtures" / "cassettes" / "test_chat" / "test_greeting"
    before = cassette_bytes(cassette)
    # breaks_on_teardown is set up before mock_transformer, so it is torn down after it
    pytester.makepyfile(test_chat=TEARDOWN_FAILS)
    result = pytester.runpytest("--probe", *dist)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([
        "*RuntimeError: teardown broke*",
        "not written (test passed, a fixture teardown failed; the cassette on disk, if any, unchanged): 1",
        "  test_chat/test_greeting  (test_chat.py::test_greeting)",
    ])
    assert cassette_bytes(cassette) == before  # the old recording ("Hello"), not this run's ("Bye")
    assert sorted(p.name for p in cassette.parent.iterdir()) == ["test_greeting"]  # no staging left over

    shutil.rmtree(cassette)  # without an old one, nothing is written either
    result = pytester.runpytest("--probe", *dist)
    result.assert_outcomes(passed=1, errors=1)
    assert not cassette.parent.exists() or not list(cassette.parent.iterdir())


MOVED_TESTS = """\
import pytest

ASK = {"user_input": "Hello", "regenerate": False}


async def test_hello(chatstream_client):
    assert (await chatstream_client.post("/chat_stream", json=ASK)).status_code == 200


@pytest.mark.chatstream_cassette("shared/greeting")
async def test_named(chatstream_client):
    assert (await chatstream_client.post("/chat_stream", json=ASK)).status_code == 200
"""


def test_verify_checks_a_cassette_copied_from_another_test_and_says_so(pytester: pytest.Pytester) -> None:
    project = make_chat_project(pytester)
    pytester.runpytest("--probe", "-k", "greeting").assert_outcomes(passed=1, deselected=3)
    cassettes = project / "fixtures" / "cassettes"
    shutil.copytree(cassettes / "test_chat" / "test_greeting", cassettes / "test_moved" / "test_hello")
    shutil.copytree(cassettes / "test_chat" / "test_greeting", cassettes / "shared" / "greeting")
    alter_first_token(cassettes / "test_moved" / "test_hello", token=3)
    pytester.makepyfile(test_moved=MOVED_TESTS)
    result = pytester.runpytest("--probe=verify", "test_moved.py")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*the live model diverged from the cassette test_moved/test_hello at step 0*Its manifest says "
        "test_chat.py::test_greeting recorded it (moved or copied from that test?)*",
        "verified: 2 test(s): 1 diverged, 1 identical",
        "recorded by another test: 2 cassette(s) (moved or copied?*",
        "  test_moved.py::test_hello: test_moved/test_hello names test_chat.py::test_greeting",
        "  test_moved.py::test_named: shared/greeting names test_chat.py::test_greeting",
    ])
    report = json.loads((project / "chatstream-verify-report.json").read_text())["cassettes"]
    assert report["test_moved.py::test_named"]["status"] == "identical"  # verified, not replayed silently
    assert {r["recorded_by"] for r in report.values()} == {"test_chat.py::test_greeting"}


FAILING_TESTS = """\
async def test_greeting(chatstream_client):
    await chatstream_client.post("/chat_stream", json={"user_input": "Hello", "regenerate": False})
    assert False, "the test's own failure"


async def test_two_turns(chatstream_client):
    await chatstream_client.post("/chat_stream", json={"user_input": "What is your name?", "regenerate": False})
"""


def test_a_comparison_error_never_hides_the_tests_own_failure(pytester: pytest.Pytester) -> None:
    project = make_chat_project(pytester)
    pytester.runpytest("--probe", "-k", "greeting or two_turns").assert_outcomes(passed=2, deselected=2)
    cassettes = project / "fixtures" / "cassettes" / "test_chat"
    for name in ("test_greeting", "test_two_turns"):  # the comparison cannot load them
        (cassettes / name / "segment-000001.json").write_text("{broken")
    pytester.makepyfile(test_chat=FAILING_TESTS)
    result = pytester.runpytest("--probe=verify")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*_ test_greeting _*",
        "E * AssertionError: the test's own failure",
        "*chatstream verify*",
        "comparing the live run with the cassette failed too (the test's own failure is above):",
        "*CassetteFormatError*segment-000001.json*",
        "*_ test_two_turns _*",
        "E *CassetteFormatError:*test_two_turns/segment-000001.json: not valid JSON*",
        "comparison failed: 2 test(s)",
        "  test_chat.py::test_greeting: CassetteFormatError*",
        "  test_chat.py::test_two_turns: CassetteFormatError*",
    ])
    result.stdout.fnmatch_lines(["FAILED test_chat.py::test_greeting - AssertionError: the test's own failure"])
    report = json.loads((project / "chatstream-verify-report.json").read_text())["cassettes"]
    assert {r["status"] for r in report.values()} == {"error"}
