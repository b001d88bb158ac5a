"""Issue 10, the cassette loader against hostile or broken cassettes: only regular files inside the
cassette, each of bounded size; every field it uses type- and range-checked; every failure a
CassetteError naming the file, never a hang, a huge allocation or another exception."""

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from chatstream.cassettes import cassette as fmt
from chatstream.cassettes.replay import MockTransformer
from chatstream.exceptions import CassetteError, CassetteFormatError

SOURCE = Path(__file__).parent.parent / "fixtures/cassettes/tests/test_endpoints_cassette/" \
    "test_plain_def_tests_use_the_sync_client"
SEGMENT_JSON = "segment-000001.json"
SEGMENT_TENSORS = "segment-000001.safetensors"


def within(seconds, func, *args):
    """Run func(*args) in a daemon thread; fail (never hang) when it takes longer than ``seconds``."""
    outcome = {}

    def run():
        try:
            outcome["value"] = func(*args)
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{func.__name__} still runs after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture
def cassette(tmp_path):
    path = tmp_path / "cassettes" / "c"
    shutil.copytree(SOURCE, path)
    return path


def load_fails(path, *fragments):
    with pytest.raises(CassetteFormatError) as excinfo:
        within(10, MockTransformer.from_path, path)
    message = str(excinfo.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def edit_json(path, edit):
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def test_the_untouched_copy_loads(cassette):
    assert within(10, MockTransformer.from_path, cassette).get_tokenizer().eos_token_id == 2


# -- 11. only regular files inside the cassette, of bounded size ---------------------------------------------


def test_a_fifo_named_like_a_segment_is_refused_without_blocking(cassette):
    os.mkfifo(cassette / "segment-000002.json")
    try:
        load_fails(cassette, "segment-000002.json", "regular file")
    finally:
        fd = os.open(cassette / "segment-000002.json", os.O_RDWR | os.O_NONBLOCK)  # frees a blocked reader
        os.close(fd)


def test_a_segment_symlinked_to_a_device_is_refused(cassette):
    os.symlink("/dev/zero", cassette / "segment-000002.json")
    load_fails(cassette, "segment-000002.json")


def test_a_directory_named_like_a_segment_is_refused(cassette):
    (cassette / "segment-000002.json").mkdir()
    load_fails(cassette, "segment-000002.json", "regular file")


def test_a_tensor_file_symlinked_outside_the_cassette_is_not_read(cassette, tmp_path):
    outside = tmp_path / "outside.safetensors"
    shutil.move(cassette / SEGMENT_TENSORS, outside)
    os.symlink(outside, cassette / SEGMENT_TENSORS)
    message = load_fails(cassette, SEGMENT_TENSORS, "outside")
    assert str(outside.stat().st_size) not in message


def test_a_symlink_inside_the_cassette_is_fine(cassette):
    shutil.move(cassette / SEGMENT_TENSORS, cassette / "moved.bin")
    os.symlink("moved.bin", cassette / SEGMENT_TENSORS)
    within(10, MockTransformer.from_path, cassette)


def test_files_over_the_size_bound_are_refused(cassette, monkeypatch):
    monkeypatch.setattr(fmt, "MAX_JSON_BYTES", 4000)
    load_fails(cassette, "manifest.json", "4000")


def test_an_over_long_dirname_is_a_cassette_error(tmp_path):
    with pytest.raises(CassetteError):
        within(10, MockTransformer, tmp_path, "x" * 5000)


# -- 12. every field checked ------------------------------------------------------------------------------


def nest(depth):
    return "[" * depth + "]" * depth


MANIFEST_EDITS = {
    "deeply nested": (lambda m: m.__setitem__("extra", "NEST"), "nested"),
    "generation_config as a list": (lambda m: m["model"].__setitem__("generation_config", [1]), "generation_config"),
    "dtype as an int": (lambda m: m["model"].__setitem__("dtype", 5), "model.dtype"),
    "unknown dtype name": (lambda m: m["model"].__setitem__("dtype", "__class__"), "model.dtype"),
    "special token as a list": (lambda m: m["tokenizer"]["special_tokens_map"].__setitem__("eos_token", ["a"]),
                                "special_tokens_map"),
    "special token id as a list": (lambda m: m["tokenizer"]["special_token_ids"].__setitem__("eos_token_id", [2]),
                                   "special_token_ids"),
    "__class__ key": (lambda m: m["tokenizer"]["special_tokens_map"].__setitem__("__class__", "x"),
                      "special_tokens_map"),
    "_transformer key": (lambda m: m["tokenizer"]["special_token_ids"].__setitem__("_transformer", 1),
                         "special_token_ids"),
    "huge tokenizer length": (lambda m: m["tokenizer"].__setitem__("len", 10**11), "tokenizer.len"),
    "vocab_size as text": (lambda m: m["tokenizer"].__setitem__("vocab_size", "many"), "tokenizer.vocab_size"),
    "chat_template as a dict": (lambda m: m["tokenizer"].__setitem__("chat_template", {"a": 1}),
                                "tokenizer.chat_template"),
    "all_special_ids of text": (lambda m: m["tokenizer"].__setitem__("all_special_ids", ["a"]),
                                "tokenizer.all_special_ids"),
    "model config as a list": (lambda m: m["model"].__setitem__("config", [1]), "model.config"),
}


@pytest.mark.parametrize("name", sorted(MANIFEST_EDITS))
def test_bad_manifest_fields_are_format_errors_naming_the_field(cassette, name):
    edit, field = MANIFEST_EDITS[name]
    path = cassette / "manifest.json"
    edit_json(path, edit)
    if "NEST" in path.read_text():
        path.write_text(path.read_text().replace('"NEST"', nest(50_000)))
    load_fails(cassette, "manifest.json", field)


SEGMENT_EDITS = {
    "deeply nested": (lambda d: d["calls"][0].__setitem__("out", "NEST"), "nested"),
    "vocab of 10^11": (lambda d: [g.__setitem__("vocab", 10**11) for g in d["groups"].values()], "vocab"),
    "forward id outside the vocabulary": (lambda d: d["forwards"][0].__setitem__("ids", [10**6]), "forwards[0].ids"),
    "negative forward id": (lambda d: d["forwards"][0].__setitem__("ids", [-1]), "forwards[0].ids"),
    "sampled token outside the vocabulary": (lambda d: d["samples"][0].__setitem__("tok", 10**6), "samples[0].tok"),
    "unknown group dtype": (lambda d: [g.__setitem__("dtype", "float8") for g in d["groups"].values()], "groups"),
}


@pytest.mark.parametrize("name", sorted(SEGMENT_EDITS))
def test_bad_segment_fields_are_format_errors_naming_the_field(cassette, name):
    edit, field = SEGMENT_EDITS[name]
    path = cassette / SEGMENT_JSON
    edit_json(path, edit)
    if "NEST" in path.read_text():
        path.write_text(path.read_text().replace('"NEST"', nest(50_000)))
    load_fails(cassette, SEGMENT_JSON, field)


def test_a_tensor_of_an_unknown_dtype_is_a_format_error(cassette):
    import hashlib
    import struct

    header = json.dumps({"g0.values": {"dtype": "Q7", "shape": [1, 1], "data_offsets": [0, 2]}}).encode()
    data = struct.pack("<Q", len(header)) + header + b"\0\0"
    (cassette / SEGMENT_TENSORS).write_bytes(data)
    edit_json(cassette / SEGMENT_JSON, lambda d: d["tensors"].update(bytes=len(data),
                                                                      sha256=hashlib.sha256(data).hexdigest()))
    load_fails(cassette, SEGMENT_TENSORS)


# -- the recorded results of tokenizer calls, by method -----------------------------------------------------


def call_index(document, method):
    return next(i for i, call in enumerate(document["calls"]) if call["fn"] == method)


def set_call_out(cassette, method, value, inner=None):
    """Replace what the recorded ``method`` call returned (``inner``: only that key of its BatchEncoding)."""

    def edit(document):
        call = document["calls"][call_index(document, method)]
        if inner is None:
            call["out"] = value
        else:
            call["out"]["data"][inner] = value

    edit_json(cassette / SEGMENT_JSON, edit)
    return call_index(json.loads((cassette / SEGMENT_JSON).read_text()), method)


def test_a_tokenizer_call_whose_input_ids_became_none_is_a_format_error_naming_the_field(cassette):
    # found by test_properties: replay raised TypeError in the decode loop instead of a CassetteError
    index = set_call_out(cassette, "__call__", None, inner="input_ids")
    load_fails(cassette, SEGMENT_JSON, f"calls[{index}].out", "input_ids", "__call__")


@pytest.mark.parametrize(("method", "value", "inner"), [
    ("__call__", None, None),
    ("__call__", ["a", "b"], "input_ids"),
    ("__call__", [1, None], "attention_mask"),
    ("__call__", {"__type__": "tensor", "dtype": "float32", "data": [[1.0, 2.0]]}, "input_ids"),
    ("decode", None, None),
    ("decode", [202], None),
    ("apply_chat_template", None, None),
    ("apply_chat_template", {"input_ids": "text"}, None),
])
def test_a_tokenizer_result_of_the_wrong_kind_is_a_format_error(cassette, method, value, inner):
    index = set_call_out(cassette, method, value, inner)
    load_fails(cassette, SEGMENT_JSON, f"calls[{index}].out", f"recorded {method} call")


@pytest.mark.parametrize(("method", "value"), [
    ("apply_chat_template", [1, 279, 202]),
    ("apply_chat_template", {"__type__": "BatchEncoding", "data": {"input_ids": [[1, 279]]}}),
    ("apply_chat_template", {"__type__": "tensor", "dtype": "int64", "data": [[1, 279]]}),
    ("decode", ""),
])
def test_tokenizer_results_of_every_allowed_kind_load(cassette, method, value):
    set_call_out(cassette, method, value)
    within(10, MockTransformer.from_path, cassette)
