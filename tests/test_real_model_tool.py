"""tools/real_model.py: where the real model lives, when it counts as built, and that a build is never half-written."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import real_model


def built(path: Path, recipe: int = real_model.RECIPE) -> Path:
    path.mkdir(parents=True)
    for name in real_model.REQUIRED_FILES:
        (path / name).write_text("{}")
    (path / real_model.MARKER).write_text(json.dumps({"recipe": recipe}))
    return path


def test_the_directory_comes_from_the_environment_else_the_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(real_model.ENV, raising=False)
    assert real_model.default_real_model_dir() == Path.home() / ".cache/chatstream/smollm2-135m-instruct"
    monkeypatch.setenv(real_model.ENV, str(tmp_path / "m"))
    assert real_model.default_real_model_dir() == tmp_path / "m"


def test_built_means_every_file_and_this_recipes_marker(tmp_path):
    assert real_model.is_built(built(tmp_path / "ok"))
    assert not real_model.is_built(built(tmp_path / "older", recipe=real_model.RECIPE - 1))
    (tmp_path / "ok" / "model.safetensors").unlink()
    assert not real_model.is_built(tmp_path / "ok")
    assert not real_model.is_built(tmp_path / "absent")


def test_a_built_model_is_kept_without_converting(tmp_path, monkeypatch):
    target = built(tmp_path / "m")
    monkeypatch.setattr(real_model, "convert", lambda *a: pytest.fail("converted again"))
    assert real_model.build(target) == target.resolve()


def test_a_failed_conversion_leaves_the_old_directory_and_no_temporary_one(tmp_path):
    target = tmp_path / "m"
    target.mkdir()
    (target / "config.json").write_text("{}")  # an unfinished earlier build
    gguf = tmp_path / "broken.gguf"
    gguf.write_bytes(b"not a gguf file")
    with pytest.raises(Exception):  # noqa: B017 - whatever transformers or gguf raise
        real_model.build(target, gguf)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.gguf", "m"]
    assert [p.name for p in target.iterdir()] == ["config.json"]
