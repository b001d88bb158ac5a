"""pytest_chatstream._cmdline: command lines that pytest reads differently from how they were meant."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_chatstream._cmdline import is_test_path, model_path_misread, probe_path_message, spaced_value


def test_spaced_value_takes_the_word_after_the_option() -> None:
    assert spaced_value(["--probe", "--probe-model", "m", "tests"], "--probe-model") == "m"
    assert spaced_value(["--probe-model=m"], "--probe-model") is None
    assert spaced_value(["tests", "--probe-model"], "--probe-model") is None  # nothing after it
    assert spaced_value(["--probe-model", "a", "--probe-model", "b"], "--probe-model") == "b"


def test_is_test_path_accepts_existing_paths_and_node_ids(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text("")
    assert is_test_path("test_x.py", tmp_path) and is_test_path("test_x.py::test_y[1]", tmp_path)
    assert not is_test_path("test_y.py", tmp_path) and not is_test_path("all", tmp_path)
    assert not is_test_path("-k", tmp_path)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "models" / "m").mkdir(parents=True)
    (root / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "elsewhere" / "m").mkdir(parents=True)
    return root


def _misread(project: Path, command_line: list[str], rootpath: Path, inipath: Path | None) -> str | None:
    return model_path_misread(command_line=command_line, test_args=[], rootpath=rootpath, inipath=inipath,
                              inifile=None, override_ini=None, rootdir=None, invocation_dir=project)


def test_a_spaced_model_inside_the_project_is_harmless(project: Path) -> None:
    ini = project / "pytest.ini"
    assert _misread(project, ["--probe", "--probe-model", "models/m"], project, ini) is None
    assert _misread(project, ["--probe", "--probe-model=../elsewhere/m"], project, ini) is None  # with '='


def test_a_spaced_model_outside_the_project_that_moved_the_rootdir_is_named(project: Path) -> None:
    outside = project.parent / "elsewhere" / "m"
    message = _misread(project, ["--probe", "--probe-model", str(outside)], outside, None)
    assert message is not None
    assert f"instead of rootdir {project} and ini file {project / 'pytest.ini'}" in message
    assert f"--probe-model={outside}" in message and "pytest-dev/pytest#8846" in message


def test_probe_path_message_shows_the_spellings_that_work() -> None:
    message = probe_path_message("tset_x.py")
    assert "'tset_x.py'" in message and "--probe=all tests/test_x.py" in message


def test_probe_path_message_lists_every_mode_repeat_included() -> None:
    message = probe_path_message("foo")
    assert "(all, missing, verify, repeat:N)" in message and "--probe=repeat:10" in message


def test_the_full_command_line_puts_pytest_addopts_first() -> None:
    from pytest_chatstream._cmdline import full_command_line

    assert full_command_line("--probe=verify -k 'a b'", ["tests/x.py", "-q"]) == \
        ["--probe=verify", "-k", "a b", "tests/x.py", "-q"]
    assert full_command_line("", ["-q"]) == ["-q"]
