import hashlib
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from _probe_support import bundled, random_model

import chatstream.cassettes.fingerprint as fingerprint
from chatstream.bundled import bundled_model_path
from chatstream.cassettes.fingerprint import (
    chat_template_fingerprint,
    fingerprint_loaded,
    fingerprint_model_dir,
    legacy_weights_fingerprint,
    same_weights,
)


@pytest.fixture
def model_dir(tmp_path):
    return shutil.copytree(bundled_model_path(), tmp_path / "model")


def test_a_loaded_model_has_its_directorys_fingerprints():
    model, tokenizer = bundled()
    prints = fingerprint_model_dir(bundled_model_path())
    assert prints["weights"].startswith("content-sha256:")
    assert prints["tokenizer"].startswith("sha256:") and prints["chat_template"].startswith("sha256:")
    assert fingerprint_loaded(model, tokenizer) == prints


def _tensor_offset(path: Path, name: str) -> int:
    """Where tensor ``name``'s data starts in a safetensors file."""
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    return 8 + header_len + header[name]["data_offsets"][0]


def _flip_bytes(path: Path, offset: int, count: int = 4) -> None:
    """Change ``count`` bytes at ``offset`` in place: a same-size retrain of those weights."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(count)
        f.seek(offset)
        f.write(bytes(b ^ 0x5A for b in old))
    assert path.stat().st_size == size


def test_a_same_size_retrain_changes_the_weights_fingerprint(model_dir):
    before = fingerprint_model_dir(model_dir)
    weights = model_dir / "model.safetensors"
    middle = _tensor_offset(weights, "model.layers.0.mlp.down_proj.weight") + 1000
    _flip_bytes(weights, middle)
    after = fingerprint_model_dir(model_dir)
    assert after["weights"] != before["weights"]
    assert after["tokenizer"] == before["tokenizer"] and after["chat_template"] == before["chat_template"]
    assert legacy_weights_fingerprint(model_dir) == legacy_weights_fingerprint(bundled_model_path())  # names, sizes


def test_large_safetensors_files_hash_the_header_and_each_tensors_ends(model_dir, monkeypatch):
    monkeypatch.setattr(fingerprint, "FULL_HASH_LIMIT", 0)  # sample even this 3 MB file
    weights = model_dir / "model.safetensors"
    before = fingerprint_model_dir(model_dir)["weights"]
    reads = []
    real_read_at = fingerprint._read_at
    monkeypatch.setattr(fingerprint, "_read_at",
                        lambda f, offset, size: reads.append(size) or real_read_at(f, offset, size))
    assert fingerprint_model_dir(model_dir)["weights"] == before
    assert sum(reads) < weights.stat().st_size / 2  # sampled, not read whole
    for tensor in ("model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.weight", "model.norm.weight"):
        _flip_bytes(weights, _tensor_offset(weights, tensor) + 8)
        after = fingerprint_model_dir(model_dir)["weights"]
        assert after != before, tensor
        before = after


def test_large_files_of_other_formats_hash_sampled_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprint, "FULL_HASH_LIMIT", 1024)
    weights = tmp_path / "pytorch_model.bin"
    weights.write_bytes(os.urandom(fingerprint.SAMPLE_BLOCK * 300))
    before = fingerprint_model_dir(tmp_path)["weights"]
    _flip_bytes(weights, 0)
    assert fingerprint_model_dir(tmp_path)["weights"] != before


def test_weights_in_the_hub_cache_are_fingerprinted_by_their_blob_hash(tmp_path):
    snapshot = _hub_cache(tmp_path, "chatstream/tiny-chat")
    blob = (snapshot / "model.safetensors").resolve()
    assert blob.parent.name == "blobs"
    before = fingerprint_model_dir(snapshot)["weights"]
    assert before == fingerprint_model_dir(snapshot)["weights"]
    blob.chmod(0o644)
    _flip_bytes(blob, 100)  # the cache never changes a blob in place: its name is its sha256
    assert fingerprint_model_dir(snapshot)["weights"] == before
    retrained = snapshot.parent.parent / "blobs" / ("0" * 64)
    shutil.copyfile(blob, retrained)
    (snapshot / "model.safetensors").unlink()
    (snapshot / "model.safetensors").symlink_to(retrained)
    assert fingerprint_model_dir(snapshot)["weights"] != before


def test_manifests_from_before_content_hashing_compare_names_and_sizes(model_dir):
    current = fingerprint_model_dir(model_dir)["weights"]
    legacy = legacy_weights_fingerprint(model_dir)
    assert legacy.startswith("sha256:") and legacy != current
    assert same_weights(legacy, current, model_dir) and same_weights(current, current, model_dir)
    assert same_weights(None, current, model_dir) and same_weights(legacy, None, model_dir)
    with open(model_dir / "model.safetensors", "ab") as f:
        f.write(b"\0")
    assert not same_weights(legacy, fingerprint_model_dir(model_dir)["weights"], model_dir)
    assert not same_weights(current, fingerprint_model_dir(model_dir)["weights"], model_dir)


def _hub_cache(cache: Path, repo_id: str, source: Path | None = None) -> Path:
    """A copy of a model in the HF cache layout (blobs named by sha256, snapshot links, refs/main)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in sorted(Path(source or bundled_model_path()).iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


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
    snapshot = _hub_cache(tmp_path, "chatstream/tiny-chat")
    model = SimpleNamespace(name_or_path="chatstream/tiny-chat", config=SimpleNamespace(_commit_hash=snapshot.name))
    hub_tokenizer = SimpleNamespace(name_or_path="chatstream/tiny-chat", chat_template=tokenizer.chat_template)
    prints = fingerprint_loaded(model, hub_tokenizer, hub_cache_dir=tmp_path)
    assert prints == fingerprint_model_dir(snapshot)
    assert prints["tokenizer"] == fingerprint_model_dir(bundled_model_path())["tokenizer"]
    absent = SimpleNamespace(name_or_path="chatstream/not-cached")
    assert fingerprint_loaded(absent, absent, hub_cache_dir=tmp_path)["weights"] is None
