"""pytest_chatstream._settings: mode, precedence and the action each test takes."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatstream.exceptions import ConfigurationError
from pytest_chatstream._settings import (
    Action,
    Mode,
    decide_action,
    is_probe_mode,
    parse_probe,
    probe_on_command_line,
    resolve_settings,
)


def _resolve(tmp_path: Path, **overrides: object):
    values = dict(
        probe=None, cli_model=None, cli_device=None, cli_fidelity=None, cli_report=None, list_unused=False,
        ini_cassette_dir=None, ini_model=None, ini_device=None, ini_fidelity=None, ini_missing=None,
        ini_report=None, invocation_dir=tmp_path / "cwd", rootpath=tmp_path / "root",
    )
    values.update(overrides)
    return resolve_settings(**values)


def test_defaults_replay_from_fixtures_cassettes(tmp_path: Path) -> None:
    settings = _resolve(tmp_path)
    assert settings.mode is Mode.REPLAY and not settings.live
    assert settings.cassette_dir == tmp_path / "root" / "fixtures" / "cassettes"
    assert settings.model_path is None and settings.device is None
    assert settings.missing == "fail"
    assert settings.fidelity_for(None) == "compact"


def test_command_line_wins_over_ini_and_ini_over_marker(tmp_path: Path) -> None:
    for made in ("cwd/m-cli", "cwd/m-env", "root/m-ini"):
        (tmp_path / made).mkdir(parents=True)
    settings = _resolve(
        tmp_path, cli_model="m-cli", ini_model="m-ini", cli_device="cpu", ini_device="cuda",
        cli_fidelity="exact", ini_fidelity="fp16",
    )
    assert settings.model_path == tmp_path / "cwd" / "m-cli"  # CLI paths: from the invocation dir
    assert (settings.model_spec, settings.model_origin) == ("m-cli", "--probe-model")
    env = _resolve(tmp_path, env_model="m-env", ini_model="m-ini")  # the environment: between the two
    assert env.model_path == tmp_path / "cwd" / "m-env" and env.model_origin == "CHATSTREAM_MODEL_PATH"
    assert settings.device == "cpu"
    assert settings.fidelity_for("compact") == "exact"
    ini_only = _resolve(tmp_path, ini_model="m-ini", ini_fidelity="fp16")
    assert ini_only.model_path == tmp_path / "root" / "m-ini"  # ini paths: from the rootdir
    assert ini_only.fidelity_for("exact") == "fp16"
    assert _resolve(tmp_path).fidelity_for("exact") == "exact"  # the marker only when nothing else says
    assert _resolve(tmp_path, ini_device="cuda:1").device == "cuda:1"


def test_a_model_setting_that_is_no_directory_keeps_its_spelling(tmp_path: Path) -> None:
    settings = _resolve(tmp_path, ini_model="org/name")
    assert settings.model_path is None  # a Hub id, or a model absent on this machine: the plugin decides
    assert (settings.model_spec, settings.model_origin, settings.model_base) == (
        "org/name", "chatstream_model_path", tmp_path / "root")


def test_verify_report_path_from_the_command_line_or_the_ini(tmp_path: Path) -> None:
    assert _resolve(tmp_path).verify_report == tmp_path / "root" / "chatstream-verify-report.json"
    assert _resolve(tmp_path, ini_report="r.json").verify_report == tmp_path / "root" / "r.json"
    assert _resolve(tmp_path, cli_report="c.json", ini_report="r.json").verify_report == tmp_path / "cwd" / "c.json"


def test_only_the_command_line_sets_the_mode(tmp_path: Path) -> None:
    assert _resolve(tmp_path, probe="all").mode is Mode.ALL
    assert _resolve(tmp_path, probe="verify").live


@pytest.mark.parametrize(("value", "mode"), [(None, Mode.REPLAY), ("all", Mode.ALL), ("missing", Mode.MISSING)])
def test_parse_probe(value: str | None, mode: Mode) -> None:
    assert parse_probe(value) == (mode, 0)


def test_parse_probe_repeat_takes_a_count_of_at_least_two() -> None:
    assert parse_probe("repeat:10") == (Mode.REPEAT, 10)
    for bad in ("repeat", "repeat:", "repeat:1", "repeat:x", "repeat:-3"):
        with pytest.raises(ConfigurationError, match=r"at least 2, e\.g\. --probe=repeat:10"):
            parse_probe(bad)
    assert is_probe_mode("repeat:x") and is_probe_mode("verify") and not is_probe_mode("tests/test_x.py")


def test_repeat_settings_threshold_and_report(tmp_path: Path) -> None:
    settings = _resolve(tmp_path, probe="repeat:4", ini_max_distinct="2")
    assert settings.live and settings.repeat == 4 and settings.repeat_max_distinct == 2
    assert settings.report_path == tmp_path / "root" / "chatstream-repeat-report.json"
    cli = _resolve(tmp_path, probe="repeat:4", ini_max_distinct="2", cli_max_distinct=1, cli_report="r.json")
    assert cli.repeat_max_distinct == 1 and cli.report_path == tmp_path / "cwd" / "r.json"  # command line wins
    assert _resolve(tmp_path, probe="verify").report_path == tmp_path / "root" / "chatstream-verify-report.json"
    with pytest.raises(ConfigurationError, match="chatstream_repeat_max_distinct"):
        _resolve(tmp_path, probe="repeat:4", ini_max_distinct="two")
    with pytest.raises(ConfigurationError, match=r"--probe-repeat-max-distinct.*>= 1"):
        _resolve(tmp_path, probe="repeat:4", cli_max_distinct=0)


def test_probe_on_command_line_tells_probe_from_its_sibling_options() -> None:
    assert probe_on_command_line(["tests", "--probe"]) and probe_on_command_line(["--probe=verify"])
    assert not probe_on_command_line(["--probe-model", "m", "--probe-device=cpu", "tests/probe"])


def test_parse_probe_refuses_unknown_modes() -> None:
    with pytest.raises(ConfigurationError, match=r"--probe='replay' .*--probe=missing"):
        parse_probe("replay")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ini_fidelity", "tiny", "chatstream_fidelity"),
        ("ini_missing", "ignore", "chatstream_missing_cassette"),
    ],
)
def test_bad_ini_values_are_named(tmp_path: Path, field: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _resolve(tmp_path, **{field: value})


def test_bad_marker_fidelity_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="fidelity"):
        _resolve(tmp_path).fidelity_for("tiny")


@pytest.mark.parametrize(
    ("mode", "exists", "action"),
    [
        (Mode.REPLAY, True, Action.REPLAY),
        (Mode.REPLAY, False, Action.MISSING),
        (Mode.ALL, True, Action.RECORD),
        (Mode.ALL, False, Action.RECORD),
        (Mode.MISSING, True, Action.REPLAY),
        (Mode.MISSING, False, Action.RECORD),
        (Mode.VERIFY, True, Action.VERIFY),
        (Mode.VERIFY, False, Action.MISSING),
        (Mode.REPEAT, True, Action.REPEAT),
        (Mode.REPEAT, False, Action.REPEAT),
    ],
)
def test_decide_action(mode: Mode, exists: bool, action: Action) -> None:
    assert decide_action(mode, exists) is action


def test_a_probe_mode_from_addopts_is_refused_saying_where_to_put_it() -> None:
    from pytest_chatstream._settings import addopts_probe_message

    message = addopts_probe_message("verify")
    assert message.startswith("--probe=verify came from the ini option addopts; only the command line")
    assert "Remove --probe from addopts" in message
