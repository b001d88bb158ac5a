"""chatstream.bundled: where the bundled tiny model is found (a wheel's copy first, then the checkout's)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from chatstream import bundled
from chatstream.exceptions import ConfigurationError

CHECKOUT_MODEL = Path(__file__).resolve().parent.parent / "fixtures" / "tiny-chat"


def test_a_checkout_finds_fixtures_tiny_chat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHATSTREAM_BUNDLED_MODEL", raising=False)
    assert not (Path(bundled.__file__).parent / "tiny_chat").exists()
    assert bundled.bundled_model_path() == CHECKOUT_MODEL


def test_an_installed_copy_comes_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CHATSTREAM_BUNDLED_MODEL", raising=False)
    installed = shutil.copytree(CHECKOUT_MODEL, tmp_path / "tiny_chat")
    monkeypatch.setattr(bundled, "_INSTALLED", installed)
    assert bundled.bundled_model_path() == installed


def test_the_environment_variable_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setenv("CHATSTREAM_BUNDLED_MODEL", str(tmp_path))
    assert bundled.bundled_model_path() == tmp_path


def test_a_missing_model_names_where_it_looked_and_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CHATSTREAM_BUNDLED_MODEL", raising=False)
    monkeypatch.setattr(bundled, "_INSTALLED", tmp_path / "a")
    monkeypatch.setattr(bundled, "_CHECKOUT", tmp_path / "b")
    with pytest.raises(ConfigurationError) as error:
        bundled.bundled_model_path()
    message = str(error.value)
    assert str(tmp_path / "a") in message and str(tmp_path / "b") in message
    assert "tools/build_tiny_model.py" in message and "CHATSTREAM_BUNDLED_MODEL" in message
