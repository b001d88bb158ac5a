"""Where a model comes from: checked local directories and Hub ids from the local HF cache, offline."""

import shutil

import pytest

from chatstream.bundled import bundled_model_path
from chatstream.engine.model_source import resolve_model_dir
from chatstream.exceptions import ConfigurationError


def _hub_snapshot(cache, repo_id: str, commit: str = "0123456789abcdef0123456789abcdef01234567"):
    """A copy of the bundled model laid out as huggingface_hub's cache keeps a downloaded repo."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(bundled_model_path(), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def test_a_local_model_directory_is_returned_as_it_is():
    assert resolve_model_dir(bundled_model_path()) == bundled_model_path()


def test_a_hub_id_resolves_from_the_local_cache_offline(tmp_path, monkeypatch):
    snapshot = _hub_snapshot(tmp_path / "hub", "acme/tiny-chat")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model_dir("acme/tiny-chat") == snapshot


def test_a_hub_id_not_in_the_cache_says_nothing_is_downloaded_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ConfigurationError, match=r"neither a local directory nor a Hub model.*hf download acme/nope"):
        resolve_model_dir("acme/nope", what="--model")


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/model", "no-such-model"])
def test_a_mistyped_path_says_it_does_not_exist(name):
    with pytest.raises(ConfigurationError, match=r"--model '.*' does not exist"):
        resolve_model_dir(name, what="--model")


def test_a_file_a_directory_without_config_and_one_without_a_tokenizer_are_each_explained(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ConfigurationError, match="is a file"):
        resolve_model_dir(tmp_path / "weights.bin")
    with pytest.raises(ConfigurationError, match=r"no config\.json"):
        resolve_model_dir(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(bundled_model_path() / name, model / name)
    with pytest.raises(ConfigurationError, match=r"no tokenizer files.*tokenizer.save_pretrained"):
        resolve_model_dir(model)


def test_bundled_names_the_bundled_model_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_model_dir("bundled") == bundled_model_path()
    (tmp_path / "bundled").mkdir()  # a directory of that name wins: it is what the path says
    with pytest.raises(ConfigurationError, match=r"no config\.json"):
        resolve_model_dir("bundled")
