import json
import shutil
from types import SimpleNamespace

import pytest
from _probe_support import bundled, random_model

from chatstream.bundled import bundled_model_path
from chatstream.fingerprint import chat_template_fingerprint, fingerprint_loaded, fingerprint_model_dir


@pytest.fixture
def model_dir(tmp_path):
    return shutil.copytree(bundled_model_path(), tmp_path / "model")


def test_a_loaded_model_has_its_directorys_fingerprints():
    model, tokenizer = bundled()
    prints = fingerprint_model_dir(bundled_model_path())
    assert all(value.startswith("sha256:") for value in prints.values())
    assert fingerprint_loaded(model, tokenizer) == prints


def test_weights_fingerprint_follows_file_names_and_sizes(model_dir):
    before = fingerprint_model_dir(model_dir)
    with open(model_dir / "model.safetensors", "ab") as f:
        f.write(b"\0")
    after = fingerprint_model_dir(model_dir)
    assert after["weights"] != before["weights"]
    assert after["tokenizer"] == before["tokenizer"] and after["chat_template"] == before["chat_template"]


def test_tokenizer_and_chat_template_fingerprints_are_separate(model_dir):
    before = fingerprint_model_dir(model_dir)
    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    template_file = model_dir / "chat_template.jinja"
    if template_file.is_file():
        template_file.write_text(template_file.read_text() + " ")
    else:
        config["chat_template"] = config["chat_template"] + " "
        config_path.write_text(json.dumps(config))
    changed = fingerprint_model_dir(model_dir)
    assert changed["chat_template"] != before["chat_template"] and changed["tokenizer"] == before["tokenizer"]
    config["model_max_length"] = 7
    config_path.write_text(json.dumps(config))
    assert fingerprint_model_dir(model_dir)["tokenizer"] != before["tokenizer"]


def test_missing_parts_are_none_and_a_missing_dir_raises(tmp_path):
    assert fingerprint_model_dir(tmp_path) == {"weights": None, "tokenizer": None, "chat_template": None}
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "absent")):
        fingerprint_model_dir(tmp_path / "absent")


def test_objects_not_loaded_from_a_directory_get_content_fingerprints():
    model, tokenizer = random_model(200)
    prints = fingerprint_loaded(model, tokenizer)
    assert prints["weights"].startswith("params-sha256:") and prints["tokenizer"].startswith("vocab-sha256:")
    assert prints["chat_template"] == chat_template_fingerprint(tokenizer.chat_template)
    assert chat_template_fingerprint(None) is None


def test_a_model_loaded_by_hub_id_is_fingerprinted_from_its_cached_snapshot(tmp_path):
    _, tokenizer = bundled()
    repo = tmp_path / "models--chatstream--tiny-chat"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(bundled_model_path(), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    model = SimpleNamespace(name_or_path="chatstream/tiny-chat", config=SimpleNamespace(_commit_hash=commit))
    hub_tokenizer = SimpleNamespace(name_or_path="chatstream/tiny-chat", chat_template=tokenizer.chat_template)
    prints = fingerprint_loaded(model, hub_tokenizer, hub_cache_dir=tmp_path)
    assert prints == fingerprint_model_dir(bundled_model_path())
    absent = SimpleNamespace(name_or_path="chatstream/not-cached")
    assert fingerprint_loaded(absent, absent, hub_cache_dir=tmp_path)["weights"] is None
