import json
import math

import pytest
import torch
from safetensors.torch import load_file

from chatstream.cassettes import cassette as fmt
from chatstream.exceptions import CassetteFormatError, CassetteNotFound


def _manifest(**changes):
    manifest = {"format_version": fmt.FORMAT_VERSION, "fidelity": "compact", "model": {"dtype": "float32"},
                "tokenizer": {}, "fingerprints": {}}
    manifest.update(changes)
    return manifest


def _write(tmp_path, rows, fidelity="compact", number=1):
    packer = fmt.TensorPacker()
    forwards = []
    for i, row in enumerate(rows):
        forwards.append({"s": i + 1, "h": fmt.history_hash([i]), "n": 0, "ids": [i], "m": "ones",
                         "lg": packer.add(fmt.encode_logits(row, fidelity))})
    body = {"params": [{"temperature": 1.0}], "kwargs": [{}], "forwards": forwards,
            "samples": [{"s": 100, "h": "00", "n": 1, "p": 0, "seed": None, "tok": 3, "lf": 1}],
            "calls": [{"s": 101, "fn": "decode", "a": [[3]], "k": 0, "out": "x"}]}
    return fmt.write_segment(tmp_path, number, body, packer)


@pytest.fixture
def cassette_dir(tmp_path):
    fmt.write_manifest(tmp_path, _manifest())
    torch.manual_seed(0)
    _write(tmp_path, [torch.randn(1000) for _ in range(3)])
    return tmp_path


def test_history_hash_is_incremental_and_content_addressed():
    ids = [5, 17, 300000, 2]
    assert fmt.HistoryHasher().extend(ids[:2]).extend(ids[2:]).hexdigest() == fmt.history_hash(ids)
    assert fmt.history_hash(ids) != fmt.history_hash(ids[:-1])
    assert len(fmt.history_hash([])) == 16


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_exact_fidelity_keeps_logits_bit_for_bit(dtype):
    row = (torch.randn(5000) * 10).to(dtype)
    stored = fmt.encode_logits(row, "exact")
    assert stored.full().dtype == dtype
    assert torch.equal(stored.full()[0], row)


def test_fp16_fidelity_rounds_to_half_and_keeps_dtype():
    row = torch.randn(5000, dtype=torch.float32) * 5
    full = fmt.encode_logits(row, "fp16").full()
    assert full.dtype == torch.float32
    assert torch.equal(full[0], row.half().float())


def test_compact_keeps_top_64_and_fills_the_rest_with_minus_inf():
    row = torch.randn(32000)
    stored = fmt.encode_logits(row, "compact")
    stored.extra[7] = float(row[7].half())  # the sampled token's logit, kept beside the top 64
    full = stored.full()[0]
    top = torch.topk(row, 64).indices
    assert torch.equal(full[top], row[top].half().float())
    assert full[7] == row[7].half().float()
    assert int(full.isfinite().sum()) == 64 + (7 not in top.tolist())
    assert full[~full.isfinite()].eq(-math.inf).all()
    assert stored.value_at(int(top[0])) == float(row[top[0]].half())


def test_compact_with_a_vocabulary_smaller_than_64():
    row = torch.randn(10)
    assert torch.equal(fmt.encode_logits(row, "compact").full()[0], row.half().float())


def test_unknown_fidelity_is_refused():
    with pytest.raises(ValueError, match="`fidelity` \\(='lossy'\\)"):
        fmt.encode_logits(torch.zeros(3), "lossy")


def test_segment_round_trip_with_safetensors_and_json_only(cassette_dir):
    loaded = fmt.load_cassette(cassette_dir)
    assert [f["ids"] for f in loaded.forwards()] == [[0], [1], [2]]
    sample = next(iter(loaded.samples()))
    assert sample["params"] == {"temperature": 1.0}
    assert next(iter(loaded.calls()))["kw"] == {}
    # the tensors file opens with safetensors alone, and the JSON names it
    document = json.loads((cassette_dir / "segment-000001.json").read_text())
    tensors = load_file(cassette_dir / document["tensors"]["file"])
    assert tensors["g0.values"].shape == (3, 64) and tensors["g0.indices"].dtype == torch.int32


def test_a_segment_without_its_json_is_not_committed_and_ignored(cassette_dir):
    (cassette_dir / "segment-000002.safetensors").write_bytes(b"half written")
    (cassette_dir / ".segment-000003.json.tmp-123").write_text("{")
    assert len(fmt.load_cassette(cassette_dir).segments) == 1


def test_missing_directory_and_manifest_name_the_path(tmp_path):
    with pytest.raises(CassetteNotFound, match=str(tmp_path / "nope")):
        fmt.load_cassette(tmp_path / "nope")
    with pytest.raises(CassetteNotFound, match=r"holds no manifest\.json"):
        fmt.load_cassette(tmp_path)


def test_truncated_manifest_names_the_file(cassette_dir):
    path = cassette_dir / "manifest.json"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CassetteFormatError, match=r"manifest\.json: not valid JSON \(truncated or corrupt"):
        fmt.load_cassette(cassette_dir)


def test_future_format_version_is_refused_with_upgrade_hint(cassette_dir):
    fmt.write_manifest(cassette_dir, _manifest(format_version=fmt.FORMAT_VERSION + 1))
    with pytest.raises(CassetteFormatError, match=r"format_version 3 is newer than this chatstream reads .*upgrade"):
        fmt.load_cassette(cassette_dir)


def test_future_segment_version_is_refused(cassette_dir):
    path = cassette_dir / "segment-000001.json"
    document = json.loads(path.read_text())
    document["format_version"] = 99
    path.write_text(json.dumps(document))
    with pytest.raises(CassetteFormatError, match=r"segment-000001\.json: format_version 99"):
        fmt.load_cassette(cassette_dir)


def test_truncated_tensors_file_names_the_file(cassette_dir):
    path = cassette_dir / "segment-000001.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CassetteFormatError, match=r"segment-000001\.safetensors: \d+ bytes that do not match"):
        fmt.load_cassette(cassette_dir)


def test_corrupt_tensors_with_matching_checksum_names_the_file(cassette_dir):
    import hashlib

    path, meta = cassette_dir / "segment-000001.safetensors", cassette_dir / "segment-000001.json"
    garbage = b"\xff" * 64
    path.write_bytes(garbage)
    document = json.loads(meta.read_text())
    document["tensors"].update(bytes=len(garbage), sha256=hashlib.sha256(garbage).hexdigest())
    meta.write_text(json.dumps(document))
    with pytest.raises(CassetteFormatError, match=r"segment-000001\.safetensors: not a valid safetensors file"):
        fmt.load_cassette(cassette_dir)


def test_committed_segment_with_missing_tensors_is_an_error(cassette_dir):
    (cassette_dir / "segment-000001.safetensors").unlink()
    with pytest.raises(CassetteFormatError, match=r"segment-000001\.safetensors: file missing"):
        fmt.load_cassette(cassette_dir)


@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda d: d["forwards"][0].pop("h"), r"forwards\[0\] lacks the field 'h'"),
    (lambda d: d["forwards"][1]["lg"].update(r=9), r"forwards\[1\].lg points at row 9"),
    (lambda d: d["samples"][0].update(p=4), r"samples\[0\].p \(=4\) is not an index into params"),
    (lambda d: d["calls"][0].update(fn=3), r"calls\[0\].fn .* has the wrong type"),
    (lambda d: d["tensors"].update(file="../x.safetensors"),
     r"tensors.file .* must name a .safetensors file beside it"),
    (lambda d: d["groups"]["g0"].update(vocab="1000"), r"groups.g0.vocab .* has the wrong type"),
    (lambda d: d["groups"]["g0"].update(width=32), r"tensor g0.values .* does not hold compact rows of width 32"),
    (lambda d: d["groups"]["g0"].update(vocab=500), r"tensor g0.indices .* outside the vocabulary of 500"),
    (lambda d: d["forwards"][0].update(ids=[1, "2"]), r"forwards\[0\].ids / .m must be lists"),
    (lambda d: d["forwards"][0]["lg"].update(x=[[5000, 1.0]]), r"forwards\[0\].lg.x\[0\] .* below 1000"),
    (lambda d: d["samples"][0].pop("seed"), r"samples\[0\] lacks the field 'seed'"),
    (lambda d: d["samples"][0].update(x=[3]), r"samples\[0\].x .* must be a \[token id, logit\] pair"),
])
def test_malformed_segment_entries_name_file_and_field(cassette_dir, edit, fragment):
    path = cassette_dir / "segment-000001.json"
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))
    with pytest.raises(CassetteFormatError, match=f"segment-000001.json: {fragment}"):
        fmt.load_cassette(cassette_dir)


def test_a_bad_later_segment_fails_the_whole_load(cassette_dir):
    _write(cassette_dir, [torch.randn(1000)], number=2)
    (cassette_dir / "segment-000002.json").write_text('{"format_version": 1, "segm')
    with pytest.raises(CassetteFormatError, match=r"segment-000002\.json"):
        fmt.load_cassette(cassette_dir)


def test_attention_mask_codes_and_keys():
    assert fmt.attention_mask_code(None, 3) is None
    assert fmt.attention_mask_code(torch.ones(1, 3, dtype=torch.long), 3) == "ones"
    assert fmt.attention_mask_code(torch.tensor([[0, 1, 1]]), 3) == [0, 1, 1]
    assert fmt.attention_mask_code(torch.ones(1, 2, dtype=torch.long), 3) == [1, 1]
    keys = {fmt.forward_key("ab", 2, m) for m in (None, "ones", [0, 1, 1])}
    assert len(keys) == 3
    assert fmt.sample_key("ab", {"t": 1}, None) != fmt.sample_key("ab", {"t": 1}, 5)


def test_a_sampled_logit_outside_its_forwards_vocabulary_is_refused(cassette_dir):
    path = cassette_dir / "segment-000001.json"
    document = json.loads(path.read_text())
    document["samples"][0]["x"] = [1000, 1.5]  # forward 1's vocabulary is 1000
    path.write_text(json.dumps(document))
    with pytest.raises(CassetteFormatError, match=r"token 1000, outside the vocabulary \(1000\) of forward 1"):
        fmt.load_cassette(cassette_dir)
