"""The plugin in the set-ups people have: models outside the project, Hub ids, pytest-asyncio's modes,
a cassette miss inside the app, a retrained model, a renamed test.

Each case runs pytest in a small project (tests/_chat_project.py) with pytester, on copies of the
bundled tiny model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest
from _chat_project import DIST_PARAMS, INI, make_chat_project, outputs

from chatstream.bundled import bundled_model_path

GREETING_TEST = """\
async def test_greeting(chatstream_client, saved):
    response = await chatstream_client.post("/chat_stream", json={"user_input": "Hello", "regenerate": False})
    assert response.status_code == 200
    saved(response.content)
"""

GREETING = "test_chat/test_greeting"


def _ini_without_model(extra: str = "") -> str:
    return INI.replace("chatstream_model_path = model\n", "") + extra


@pytest.fixture
def outside_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny model in a directory outside the project (no ini file above it)."""
    return shutil.copytree(bundled_model_path(), tmp_path_factory.mktemp("elsewhere") / "outside-model")


def _manifest(project: Path, cassette: str = GREETING) -> dict:
    return json.loads((project / "fixtures" / "cassettes" / cassette / "manifest.json").read_text())


def _local_paths(value: object) -> list[str]:
    """Every string in a manifest that is an absolute local path or under the home directory."""
    home = os.path.expanduser("~")
    if isinstance(value, dict):
        return [p for item in value.values() for p in _local_paths(item)]
    if isinstance(value, list):
        return [p for item in value for p in _local_paths(item)]
    if isinstance(value, str) and "\n" not in value:
        absolute = (PurePosixPath(value).is_absolute() and len(PurePosixPath(value).parts) >= 3) or (
            PureWindowsPath(value).is_absolute())
        if absolute or value.startswith("~/") or home in value:
            return [value]
    return []


# -- 1. where --probe-model comes from: cassettes land where the project's ini says ------------------------


def test_a_spaced_probe_model_outside_the_project_stops_the_run_before_anything_is_written(
    pytester: pytest.Pytester, outside_model: Path
) -> None:
    project = make_chat_project(pytester, tests=GREETING_TEST)
    pytester.makeini(_ini_without_model())
    # (-p no:asyncio: pytest-asyncio would warn that the ini it was given, none, sets no loop scope)
    result = pytester.runpytest("-p", "no:asyncio", "--probe", "--probe-model", str(outside_model))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        f"ERROR: pytest read `--probe-model {outside_model}` (with a space) as the test path*so this run got "
        f"rootdir * and ini file (none) instead of rootdir {project} and ini file {project / 'tox.ini'}*"
        f"Write it with '=': --probe-model={outside_model}*CHATSTREAM_MODEL_PATH*"
    ])
    assert not (project / "fixtures").exists() and not (outside_model / "fixtures").exists()
    assert "passed" not in result.stdout.str() and "error" not in result.stdout.str().lower()


@pytest.mark.parametrize("spelling", ["equals", "environment", "ini"])
def test_each_working_spelling_of_an_outside_model_records_into_the_projects_cassette_dir(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, outside_model: Path, spelling: str
) -> None:
    project = make_chat_project(pytester, tests=GREETING_TEST)
    shutil.rmtree(project / "model")  # only the outside copy exists
    args = ["--probe"]
    pytester.makeini(_ini_without_model())
    if spelling == "equals":
        args.append(f"--probe-model={outside_model}")
    elif spelling == "environment":
        monkeypatch.setenv("CHATSTREAM_MODEL_PATH", str(outside_model))
    else:
        pytester.makeini(_ini_without_model(f"chatstream_model_path = {outside_model}\n"))
    pytester.runpytest(*args).assert_outcomes(passed=1)
    manifest = _manifest(project)
    assert manifest["model"]["name_or_path"] == "outside-model"  # recorded from the outside copy
    assert not (outside_model / "fixtures").exists()
    live = outputs(project)
    pytester.runpytest().assert_outcomes(passed=1)  # the next plain run finds the cassette
    assert outputs(project) == live


# -- 2. a bare --probe followed by a test path --------------------------------------------------------------


OTHER_TEST = """\
def test_other(chatstream_sync_client, saved):
    saved(chatstream_sync_client.post("/chat_stream", json={"user_input": "Bye", "regenerate": False}).content)
"""


@DIST_PARAMS
def test_a_test_path_after_a_bare_probe_is_recorded(pytester: pytest.Pytester, dist: list[str]) -> None:
    project = make_chat_project(pytester, tests=GREETING_TEST)
    pytester.makepyfile(test_other=OTHER_TEST)
    result = pytester.runpytest("--probe", "test_other.py", *dist)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["mode: probe=all; 1 test(s) used cassettes in *", "recorded: 1 cassette(s), *"])
    cassettes = project / "fixtures" / "cassettes"
    assert [p.parent.relative_to(cassettes).as_posix() for p in cassettes.rglob("manifest.json")] == [
        "test_other/test_other"
    ]


def test_a_bare_probe_followed_by_neither_a_mode_nor_a_path_stops_the_run(pytester: pytest.Pytester) -> None:
    make_chat_project(pytester, tests=GREETING_TEST)
    result = pytester.runpytest("--probe", "test_chta.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --probe got 'test_chta.py', which is neither a probe mode*"
                                 "pytest --probe=all tests/test_x.py"])


# -- 3. a Hub id from the local HF cache; a model that is not there fails once ------------------------------


def _hub_cache(cache: Path, repo_id: str) -> Path:
    """The tiny model in the HF cache layout: blobs named by their sha256, snapshot links, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in sorted(bundled_model_path().iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_a_hub_id_is_recorded_from_the_local_hf_cache(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cache = tmp_path_factory.mktemp("hf-cache")
    _hub_cache(cache, "chatstream/tiny-chat")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    project = make_chat_project(pytester, tests=GREETING_TEST)
    shutil.rmtree(project / "model")
    pytester.makeini(_ini_without_model("chatstream_model_path = chatstream/tiny-chat\n"))
    pytester.runpytest("--probe").assert_outcomes(passed=1)
    manifest = _manifest(project)
    assert manifest["model"]["name_or_path"] == "chatstream/tiny-chat"
    assert manifest["tokenizer"]["name_or_path"] == "chatstream/tiny-chat"
    assert _local_paths(manifest) == []
    live = outputs(project)
    replayed = pytester.runpytest()  # the ini's Hub id is found again for the staleness check: not stale
    replayed.assert_outcomes(passed=1)
    assert outputs(project) == live


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("chatstream/not-downloaded",
         "ERROR: --probe-model 'chatstream/not-downloaded' is neither a local directory nor a Hub model in the local "
         "HF cache (*empty-cache); nothing is downloaded at run time. Download it first*"),
        ("./modle", "ERROR: --probe-model '*/modle' does not exist (looked for the directory */modle); pass the path*"),
        ("tests", "ERROR: --probe-model '*/tests' is not a HF model directory (no config.json in it)*"),
    ],
)
def test_a_model_that_is_not_there_fails_once_at_start_up(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model: str, message: str
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    make_chat_project(pytester)  # four tests: an error per test would show four times
    (pytester.path / "tests").mkdir()
    result = pytester.runpytest("--probe", f"--probe-model={model}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert result.stderr.str().count("ERROR:") == 1 and "test_greeting" not in result.stdout.str()


# -- 4. pytest-asyncio strict and auto mode, anyio beside it, sync tests -----------------------------------


STRICT_TESTS = """\
import json

import pytest

ASK = {"user_input": "Hello", "regenerate": False}


@pytest.mark.asyncio
async def test_client(chatstream_client, saved):
    response = await chatstream_client.post("/chat_stream", json=ASK)
    assert response.status_code == 200
    saved(response.content)


@pytest.mark.asyncio
async def test_chat_stream(chat_stream, saved):
    texts = [text async for text, _, _ in chat_stream.handle_console_input("Do you like cats?")]
    saved(json.dumps(texts).encode())


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_anyio_beside_pytest_asyncio(chatstream_client, saved):
    saved((await chatstream_client.post("/chat_stream", json=ASK)).content)


def test_sync(chatstream_sync_client, saved):
    saved(chatstream_sync_client.post("/chat_stream", json=ASK).content)
"""


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_async_fixtures_work_in_pytest_asyncio_strict_and_auto_mode(pytester: pytest.Pytester, mode: str) -> None:
    project = make_chat_project(pytester, tests=STRICT_TESTS)
    pytester.makeini(INI.replace("asyncio_mode = auto", f"asyncio_mode = {mode}"))
    pytester.runpytest("--probe").assert_outcomes(passed=4)
    live = outputs(project)
    assert live["test_client"].endswith(b"<::EOS::>") and live["test_client"] == live["test_sync"]
    assert live["test_anyio_beside_pytest_asyncio"] == live["test_client"]
    pytester.runpytest().assert_outcomes(passed=4)
    assert outputs(project) == live


# -- 5. a cassette miss inside the app: the test fails with the miss itself --------------------------------


@DIST_PARAMS
def test_a_cassette_miss_inside_the_app_is_the_tests_failure(pytester: pytest.Pytester, dist: list[str]) -> None:
    make_chat_project(pytester, tests=GREETING_TEST)
    pytester.runpytest("--probe").assert_outcomes(passed=1)
    pytester.makepyfile(test_chat=GREETING_TEST.replace('"Hello"', '"Something never recorded"'))
    result = pytester.runpytest("-rf", *dist)
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*CassetteMiss: *",
        "*chatstream: where the cassette error went*",
        "The app under test caught this CassetteMiss and answered with an error instead*",
        "*assert 500 == 200*",
        "FAILED test_chat.py::test_greeting - *CassetteMiss: *",
    ])
    assert text.index("CassetteMiss: ") < text.index("assert 500 == 200")  # the miss comes first


def test_a_test_that_fails_without_a_miss_keeps_its_own_failure(pytester: pytest.Pytester) -> None:
    make_chat_project(pytester, tests=GREETING_TEST)
    pytester.runpytest("--probe").assert_outcomes(passed=1)
    pytester.makepyfile(test_chat=GREETING_TEST + "    assert False, 'the own failure of the test'\n")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    assert "CassetteMiss" not in result.stdout.str() and "the own failure of the test" in result.stdout.str()


# -- 6. a retrain at the same size makes the cassette stale -------------------------------------------------


def test_a_same_size_retrain_makes_replay_warn_stale(pytester: pytest.Pytester) -> None:
    project = make_chat_project(pytester, tests=GREETING_TEST)
    pytester.runpytest("--probe").assert_outcomes(passed=1)
    pytester.runpytest().assert_outcomes(passed=1)
    weights = project / "model" / "model.safetensors"
    size = weights.stat().st_size
    data = bytearray(weights.read_bytes())
    data[size // 2: size // 2 + 4] = bytes(b ^ 0xFF for b in data[size // 2: size // 2 + 4])
    weights.write_bytes(bytes(data))
    assert weights.stat().st_size == size
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)  # the project turns warnings into errors
    result.stdout.fnmatch_lines(["*StaleCassetteWarning: the cassette */test_greeting is stale: the weights of *"])


# -- 7. manifests keep no local path -----------------------------------------------------------------------


def test_a_recorded_manifest_holds_no_local_path(pytester: pytest.Pytester) -> None:
    project = make_chat_project(pytester, tests=GREETING_TEST)
    pytester.runpytest("--probe").assert_outcomes(passed=1)
    manifest = _manifest(project)
    text = json.dumps(manifest)
    assert str(project) not in text and os.path.expanduser("~") not in text
    assert _local_paths(manifest) == []
    assert manifest["model"]["name_or_path"] == "model" and manifest["model"]["config"]["_name_or_path"] == "model"


# -- 8. a renamed test: the missing cassette's message points at the old one -------------------------------


def test_a_renamed_tests_missing_cassette_points_at_the_unused_one(pytester: pytest.Pytester) -> None:
    project = make_chat_project(pytester, tests=GREETING_TEST)
    pytester.runpytest("--probe").assert_outcomes(passed=1)
    live = outputs(project)
    pytester.makepyfile(test_chat=GREETING_TEST.replace("test_greeting", "test_hello"))
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*CassetteNotFound: no cassette for test_chat.py::test_hello*",
        "*No collected test uses this cassette on disk:",
        "*  test_chat/test_greeting",
        "*If the test was renamed from test_chat/test_greeting, move its cassette instead of re-recording: "
        "git mv fixtures/cassettes/test_chat/test_greeting fixtures/cassettes/test_chat/test_hello",
    ])
    cassettes = project / "fixtures" / "cassettes" / "test_chat"
    os.rename(cassettes / "test_greeting", cassettes / "test_hello")  # what `git mv` does
    pytester.runpytest().assert_outcomes(passed=1)
    assert outputs(project) == {"test_hello": live["test_greeting"]}
