"""The plugin's command-line and ini surface, run through pytester (no model involved)."""

from __future__ import annotations

import re

import pytest
import torch

# pytester's in-process runs drop the modules first imported inside them, and torch cannot be
# imported twice in one process: import chatstream (and so torch) out here, once.
import chatstream.engine.device  # noqa: F401  (the chatstream_device fixture imports it)

# Each run-the-tests case runs plainly and under xdist. pytest-benchmark, when installed, warns under
# xdist, and warnings are errors in this repo.
both = pytest.mark.parametrize("dist", [[], ["-n", "2", "-p", "no:benchmark"]], ids=["plain", "xdist"])

NO_MODEL_TEST = """
def test_uses_a_cassette(mock_transformer):
    pass
"""


BASE_INI = "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(BASE_INI)
    return pytester


def test_options_are_documented_in_one_group(project: pytest.Pytester) -> None:
    result = project.runpytest("--help")
    result.stdout.fnmatch_lines([
        "ChatStream cassettes*",
        "*--probe=[[]MODE[]]*",
        "*--probe-model=PATH*",
        "*--probe-device=DEVICE*",
        "*--probe-fidelity=*",
        "*--probe-report=PATH*",
        "*--chatstream-unused*",
    ])
    result.stdout.fnmatch_lines(["*chatstream_cassette_dir*", "*chatstream_missing_cassette*"])


def test_marker_is_registered(project: pytest.Pytester) -> None:
    result = project.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.chatstream_cassette(name=None, *, fidelity=None)*"])


def test_fixtures_show_one_line_docstrings(project: pytest.Pytester) -> None:
    project.makepyfile("def test_x(): pass")
    result = project.runpytest("--fixtures")
    lines = result.stdout.lines
    for name in ("chatstream_config", "chatstream_live_model", "mock_transformer", "chatstream_model",
                 "chatstream_tokenizer", "chatstream_token_sampler", "chat_stream", "chatstream_app",
                 "chatstream_client", "chatstream_sync_client", "chatstream_factory", "chatstream_device"):
        header = next((i for i, line in enumerate(lines) if re.match(rf"{name}( \[[a-z]+ scope\])? -- ", line)), None)
        assert header is not None, f"{name} is not listed by --fixtures"
        doc = lines[header + 1]
        assert re.match(r"    \S", doc) and "no docstring available" not in doc, f"{name} has no docstring: {doc!r}"


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        ("chatstream_fidelity = tiny", "*`chatstream_fidelity` (='tiny') must be one of compact, fp16, exact*"),
        ("chatstream_missing_cassette = ignore", "*`chatstream_missing_cassette` (='ignore')*fail, skip*"),
    ],
)
def test_bad_ini_values_stop_the_run_with_a_usage_error(project: pytest.Pytester, ini: str, message: str) -> None:
    project.makeini(BASE_INI + ini + "\n")
    project.makepyfile(NO_MODEL_TEST)
    result = project.runpytest()
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_an_ini_file_cannot_turn_on_probe(project: pytest.Pytester) -> None:
    project.makeini(BASE_INI + "addopts = --probe\n")
    project.makepyfile(NO_MODEL_TEST)
    result = project.runpytest()
    result.stderr.fnmatch_lines(["ERROR: --probe=all came from the ini option addopts; only the command line*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_probe_device_comes_from_the_command_line_then_the_ini(project: pytest.Pytester) -> None:
    project.makeini(BASE_INI + "chatstream_device = cuda:1\n")
    project.makepyfile("""
        def test_device(chatstream_device, request):
            (request.config.rootpath / "device").write_text(chatstream_device)
    """)
    device = project.path / "device"
    if torch.cuda.device_count() >= 2:
        project.runpytest("--probe").assert_outcomes(passed=1)
        assert device.read_text() == "cuda:1"
    else:  # the ini's device is the one checked, and refused on a machine without it
        result = project.runpytest("--probe")
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*`device` (='cuda:1') asks for CUDA*"])
    project.runpytest("--probe", "--probe-device", "cpu").assert_outcomes(passed=1)
    assert device.read_text() == "cpu"


def test_unknown_probe_mode_is_refused(project: pytest.Pytester) -> None:
    result = project.runpytest("--probe=replay")
    result.stderr.fnmatch_lines([
        "ERROR: --probe got 'replay', which is neither a probe mode (all, missing, verify, repeat:N) nor an "
        "existing test path. Write the mode with '=' (--probe=all, --probe=missing, --probe=verify, "
        "--probe=repeat:10)*"
    ])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_bad_marker_name_errors_that_test_only(project: pytest.Pytester) -> None:
    project.makepyfile("""
        import pytest

        @pytest.mark.chatstream_cassette("../outside")
        def test_escapes(mock_transformer):
            pass

        def test_other():
            pass
    """)
    result = project.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ConfigurationError*test_escapes: chatstream_cassette marker*must stay inside*"])


@both
def test_two_tests_mapping_to_one_cassette_are_refused(project: pytest.Pytester, dist: list[str]) -> None:
    project.makepyfile("""
        import pytest

        @pytest.mark.parametrize("x", ["a b", "a/b", "c"])
        def test_same(mock_transformer, x):
            pass
    """)
    result = project.runpytest(*dist)
    result.assert_outcomes(errors=3)  # "c" has no cassette: it errors as missing
    result.stdout.fnmatch_lines([
        "*test_same?a b? and *test_same?a/b? would share the cassette *test_same_a_b_*"
        "@pytest.mark.chatstream_cassette('a-name')*"
    ])


def test_a_conftest_hook_can_choose_cassette_paths(project: pytest.Pytester) -> None:
    project.makeconftest("""
        def pytest_chatstream_cassette_path(item, default):
            return "by-hook/" + item.name if item.name.startswith("test_hooked") else None
    """)
    project.makepyfile("""
        import pytest

        def test_hooked(mock_transformer):
            pass

        def test_default(mock_transformer):
            pass

        @pytest.mark.chatstream_cassette("named")
        def test_hooked_but_named(mock_transformer):
            pass
    """)
    result = project.runpytest()
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines([
        "missing: 3 cassette(s)",
        "  by-hook/test_hooked  (*::test_hooked)",
        "  named  (*::test_hooked_but_named)",
        "  test_a_conftest_hook_can_choose_cassette_paths/test_default  (*::test_default)",
    ])


def test_settings_arguments_read_each_option_and_ini_value_and_the_environment(tmp_path) -> None:
    """pytest_chatstream._options, plain code: the arguments resolve_settings gets from pytest's getters."""
    from pytest_chatstream._options import INI_OPTIONS, OPTIONS, settings_arguments
    from pytest_chatstream._settings import resolve_settings

    options = {name: f"cli{name}" for name, _ in OPTIONS}
    ini = {name: f"ini-{name}" for name, _ in INI_OPTIONS}
    arguments = settings_arguments(options.__getitem__, ini.__getitem__, {"CHATSTREAM_MODEL_PATH": "env-model"})
    assert arguments == {
        "cli_model": "cli--probe-model", "env_model": "env-model", "cli_device": "cli--probe-device",
        "cli_fidelity": "cli--probe-fidelity", "cli_report": "cli--probe-report",
        "list_unused": "cli--chatstream-unused", "ini_cassette_dir": "ini-chatstream_cassette_dir",
        "ini_model": "ini-chatstream_model_path", "ini_device": "ini-chatstream_device",
        "ini_fidelity": "ini-chatstream_fidelity", "ini_missing": "ini-chatstream_missing_cassette",
        "ini_report": "ini-chatstream_verify_report", "cli_max_distinct": "cli--probe-repeat-max-distinct",
        "ini_max_distinct": "ini-chatstream_repeat_max_distinct", "ini_repeat_report": "ini-chatstream_repeat_report",
    }
    # every ini option is read; empty ini values and environment variables are unset
    assert {k for k in arguments if k.startswith("ini_")} == {f"ini_{n}" for n in (
        "cassette_dir", "model", "device", "fidelity", "missing", "report", "max_distinct", "repeat_report")}
    unset = settings_arguments(lambda name: None, lambda name: "", {"CHATSTREAM_MODEL_PATH": ""})
    assert all(value is None for value in unset.values())
    settings = resolve_settings(probe=None, invocation_dir=tmp_path, rootpath=tmp_path, **unset)
    assert settings.cassette_dir == tmp_path / "fixtures" / "cassettes"
