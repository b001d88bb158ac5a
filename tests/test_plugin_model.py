"""pytest_chatstream._model: the model a --probe run records from, checked once; the live model and device."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chatstream.bundled import bundled_model_path
from chatstream.exceptions import ConfigurationError
from pytest_chatstream._model import load_live_model, locate_model, run_device, with_model_dir
from pytest_chatstream._settings import resolve_settings


def _settings(tmp_path: Path, probe: str | None, model: str | None = None, device: str | None = None):
    return resolve_settings(
        probe=probe, cli_model=model, cli_device=device, cli_fidelity=None, cli_report=None, list_unused=False,
        ini_cassette_dir=None, ini_model=None, ini_device=None, ini_fidelity=None, ini_missing=None,
        ini_report=None, invocation_dir=tmp_path, rootpath=tmp_path,
    )


def test_a_live_run_gets_the_checked_directory_of_its_model(tmp_path: Path) -> None:
    settings = with_model_dir(_settings(tmp_path, "all", "bundled"))
    assert settings.model_path == bundled_model_path() == locate_model("bundled", "--probe-model", tmp_path)
    assert settings.model_spec == "bundled"


def test_a_replay_run_or_one_without_a_model_is_left_as_it_is(tmp_path: Path) -> None:
    replay = _settings(tmp_path, None, "no/such-model")
    assert with_model_dir(replay) is replay  # replay loads no model: a missing one is no error
    unnamed = _settings(tmp_path, "all")
    assert with_model_dir(unnamed) is unnamed


def test_a_live_run_with_a_missing_model_is_refused_naming_the_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="--probe-model"):
        with_model_dir(_settings(tmp_path, "all", str(tmp_path / "absent")))


def test_the_live_model_loads_only_in_a_live_run_with_a_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="only a --probe run does"):
        load_live_model(_settings(tmp_path, None, "bundled"))
    with pytest.raises(ConfigurationError, match="--probe needs a model to record from"):
        load_live_model(_settings(tmp_path, "all"))
    settings = dataclasses.replace(with_model_dir(_settings(tmp_path, "all", "bundled")), device="cpu")
    model, tokenizer = load_live_model(settings)
    assert not model.training and str(model.device) == "cpu" and tokenizer("hi")["input_ids"]


def test_replay_runs_on_the_cpu_and_a_live_run_on_its_device(tmp_path: Path) -> None:
    assert run_device(_settings(tmp_path, None, device="cuda:3")) == "cpu"
    assert run_device(_settings(tmp_path, "all", device="cpu")) == "cpu"
    with pytest.raises(ConfigurationError, match="tpu"):  # the live device is checked; replay's never is
        run_device(_settings(tmp_path, "all", device="tpu"))
