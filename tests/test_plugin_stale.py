"""pytest_chatstream._stale: the stale-cassette warning of replay, against the configured model's local copy.
Plain code, tested without pytester (tests/test_plugin_fixtures.py shows the warning in a run)."""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace

from chatstream.bundled import bundled_model_path
from chatstream.cassettes.fingerprint import fingerprint_model_dir
from pytest_chatstream._session import StaleCassetteWarning
from pytest_chatstream._stale import StaleCheck


@functools.cache
def bundled_fingerprints() -> dict:
    return fingerprint_model_dir(bundled_model_path())


def settings(model_path: Path | None, spec: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(model_path=model_path, model_spec=spec, model_base=None,
                           model_origin="chatstream_model_path")


def test_a_cassette_of_the_same_model_is_not_stale():
    check = StaleCheck(settings(bundled_model_path()))
    manifest = {"fingerprints": bundled_fingerprints()}
    assert check.warning(Path("cassettes/t"), manifest, "t.py::a") is None
    assert check.fingerprints(bundled_model_path()) is check.fingerprints(bundled_model_path())  # read once


def test_a_cassette_of_another_tokenizer_warns_naming_it():
    check = StaleCheck(settings(bundled_model_path()))
    manifest = {"fingerprints": {**bundled_fingerprints(), "tokenizer": "sha256:other"}}
    warning = check.warning(Path("cassettes/t"), manifest, "t.py::a")
    assert isinstance(warning, StaleCassetteWarning)
    assert "cassettes/t is stale: the tokenizer of" in str(warning) and "t.py::a" in str(warning)


def test_without_a_local_model_nothing_is_said(tmp_path: Path):
    manifest = {"fingerprints": {"weights": "sha256:other"}}
    assert StaleCheck(settings(None)).warning(Path("c"), manifest, "t.py::a") is None
    assert StaleCheck(settings(tmp_path / "gone")).warning(Path("c"), manifest, "t.py::a") is None
