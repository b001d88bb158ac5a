"""The plugin in a downstream project, as the docs set one up: outside this repository, a conftest that
imports the app through the ini's ``pythonpath``, the bundled model named ``bundled``.

Each case runs pytest in a fresh interpreter (``runpytest_subprocess``): the spaced-spelling guard
must act before pytest imports conftests, which an in-process run would already have done.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

GREETING = """\
import pytest


@pytest.mark.asyncio
async def test_greeting(chatstream_client):
    response = await chatstream_client.post("/chat_stream", json={"user_input": "Hello", "regenerate": False})
    assert response.status_code == 200
    assert response.text.endswith("<::EOS::>")
"""
INI = """\
[pytest]
pythonpath = src
asyncio_default_fixture_loop_scope = function
"""


@pytest.fixture
def downstream(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with its own package (``src/myapp``), a conftest importing it and one cassette test."""
    monkeypatch.delenv("CHATSTREAM_MODEL_PATH", raising=False)
    root = pytester.path
    (root / "pytest.ini").write_text(INI)
    (root / "src" / "myapp").mkdir(parents=True)
    (root / "src" / "myapp" / "__init__.py").write_text("GREETING = 'Hello'\n")
    (root / "tests").mkdir()
    (root / "tests" / "conftest.py").write_text("import myapp  # found through the ini's pythonpath\n")
    (root / "tests" / "test_chat.py").write_text(GREETING)
    return root


def test_probe_model_bundled_records_from_any_project(pytester: pytest.Pytester, downstream: Path) -> None:
    result = pytester.runpytest_subprocess("--probe", "--probe-model=bundled", "-p", "no:randomly")
    result.assert_outcomes(passed=1)
    cassette = downstream / "fixtures" / "cassettes" / "tests" / "test_chat" / "test_greeting"
    assert (cassette / "manifest.json").is_file()
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=1)  # replays it


def test_recorded_cassette_directories_follow_the_umask(pytester: pytest.Pytester, downstream: Path) -> None:
    old = os.umask(0o022)
    try:
        pytester.runpytest_subprocess("--probe", "--probe-model=bundled").assert_outcomes(passed=1)
    finally:
        os.umask(old)
    cassette = downstream / "fixtures" / "cassettes" / "tests" / "test_chat" / "test_greeting"
    assert cassette.stat().st_mode & 0o777 == 0o755  # like its parent, not mkdtemp's 0700
    assert cassette.parent.stat().st_mode & 0o777 == 0o755


def test_a_spaced_model_outside_the_project_is_refused_before_conftests_are_imported(
    pytester: pytest.Pytester, downstream: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from chatstream.bundled import bundled_model_path

    outside = tmp_path_factory.mktemp("elsewhere") / "model"
    outside.symlink_to(bundled_model_path(), target_is_directory=True)
    # pytest roots the run at the common ancestor of the project and the "test path": no ini file, so
    # no pythonpath, and tests/conftest.py (loaded before any plugin's pytest_configure) cannot import myapp.
    result = pytester.runpytest_subprocess("--probe", "--probe-model", str(outside))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*Write it with '=': --probe-model={outside}*"])
    assert "ImportError while loading conftest" not in result.stderr.str() + result.stdout.str()


def test_probe_without_a_model_is_one_usage_error_before_any_test_runs(
    pytester: pytest.Pytester, downstream: Path
) -> None:
    (downstream / "tests" / "test_more.py").write_text(GREETING.replace("test_greeting", "test_again"))
    result = pytester.runpytest_subprocess("--probe")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = result.stderr.str()
    assert errors.count("ERROR: --probe needs a model to record from") == 1, errors
    assert "--probe-model=PATH" in errors and "`bundled`" in errors
    assert "tests/test_chat.py::test_greeting" in errors and "tests/test_more.py::test_again" in errors
    assert "passed" not in result.stdout.str() and "failed" not in result.stdout.str()


def test_probe_without_a_model_runs_when_the_project_brings_its_own_live_model(
    pytester: pytest.Pytester, downstream: Path
) -> None:
    (downstream / "tests" / "conftest.py").write_text(
        "import myapp\nimport pytest\n\n\n"
        "@pytest.fixture(scope='session')\n"
        "def chatstream_live_model():\n"
        "    from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "    from chatstream.bundled import bundled_model_path\n"
        "    path = bundled_model_path()\n"
        "    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)\n"
    )
    pytester.runpytest_subprocess("--probe").assert_outcomes(passed=1)


def test_a_failed_recording_without_a_cassette_does_not_claim_one_was_kept(
    pytester: pytest.Pytester, downstream: Path
) -> None:
    (downstream / "tests" / "test_chat.py").write_text(GREETING + "    assert False, 'fails'\n")
    result = pytester.runpytest_subprocess("--probe", "--probe-model=bundled")
    result.assert_outcomes(failed=1)
    assert "existing cassette kept" not in result.stdout.str()
    result.stdout.fnmatch_lines(["not written (test failed; the cassette on disk, if any, unchanged): 1"])
    assert not (downstream / "fixtures" / "cassettes" / "tests" / "test_chat" / "test_greeting").exists()
