"""Loading a model: the dtype asked for, straight onto the device, refused up front when it cannot fit."""

import logging

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from chatstream.bundled import bundled_model_path
from chatstream.engine import model_loading
from chatstream.engine.model_loading import (
    check_fits,
    checkpoint_size,
    free_memory,
    load_model,
    resolve_dtype,
)
from chatstream.exceptions import ConfigurationError, ModelTooLargeError

CPU = torch.device("cpu")


@pytest.fixture
def from_pretrained_calls(monkeypatch):
    """The keyword arguments of each AutoModelForCausalLM.from_pretrained call (the real one still runs)."""
    calls = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def recording(cls, *args, **kwargs):
        calls.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(recording))
    return calls


def test_the_checkpoint_size_is_read_from_the_headers_and_matches_the_loaded_model():
    size = checkpoint_size(bundled_model_path())
    model = AutoModelForCausalLM.from_pretrained(bundled_model_path())
    parameters = sum(p.numel() for p in model.parameters())
    assert size.parameters == parameters and size.dtype == torch.float32
    assert size.bytes_as(None) == size.bytes_as(torch.float32) == parameters * 4
    assert size.bytes_as(torch.bfloat16) == size.bytes_as(torch.float16) == parameters * 2


def test_integer_tensors_keep_their_size_whatever_the_dtype(tmp_path):
    save_file({"w": torch.zeros(10, 4, dtype=torch.float16), "ids": torch.zeros(8, dtype=torch.int64)},
              str(tmp_path / "model.safetensors"))
    size = checkpoint_size(tmp_path)
    assert (size.parameters, size.floating_parameters, size.dtype) == (48, 40, torch.float16)
    assert size.bytes_as(None) == 40 * 2 + 8 * 8
    assert size.bytes_as(torch.float32) == 40 * 4 + 8 * 8


def test_a_pickled_checkpoint_is_sized_by_its_files_without_opening_them(tmp_path):
    (tmp_path / "config.json").write_text('{"torch_dtype": "bfloat16"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0" * 1000)
    size = checkpoint_size(tmp_path)
    assert size.parameters is None and size.dtype == torch.bfloat16
    assert (size.bytes_as(None), size.bytes_as(torch.float32)) == (1000, 2000)


@pytest.mark.parametrize(("given", "expected"), [
    ("auto", None), (None, None), ("bfloat16", torch.bfloat16), ("float16", torch.float16),
    ("float32", torch.float32), (torch.bfloat16, torch.bfloat16)])
def test_dtype_names(given, expected):
    assert resolve_dtype(given) is expected


@pytest.mark.parametrize("bad", ["int8", "fp16", torch.float64, 16])
def test_other_dtypes_are_refused_naming_the_choices(bad):
    with pytest.raises(ConfigurationError, match=r"`dtype` .* must be one of 'auto', 'bfloat16'"):
        resolve_dtype(bad)


def test_free_memory_on_the_cpu_is_the_available_ram():
    import psutil

    assert 0 < free_memory(CPU) <= psutil.virtual_memory().total


def test_weights_larger_than_the_free_memory_are_refused_with_what_to_do():
    check_fits(100, 100, what="m", dtype=None, device=CPU)
    with pytest.raises(ModelTooLargeError) as error:
        check_fits(3 * 2**30, 2**30, what="the model /m", dtype=torch.float32, device=CPU)
    message = str(error.value)
    assert "the model /m needs 3.00 GiB for its weights alone in float32, but cpu has only 1.00 GiB free" in message
    assert "--dtype bfloat16" in message and "--device" in message
    with pytest.raises(ModelTooLargeError) as error:
        check_fits(2**21, 2**20, what="m", dtype=torch.bfloat16, device=CPU)
    assert "--dtype" not in str(error.value), "already half precision: no dtype advice"
    assert isinstance(error.value, ConfigurationError)


def test_load_model_loads_in_the_dtype_asked_onto_the_device_and_logs_it(from_pretrained_calls, caplog):
    with caplog.at_level(logging.INFO, logger="chatstream"):
        model, tokenizer = load_model(bundled_model_path(), "cpu", "bfloat16", progress=False)
    assert model.dtype == torch.bfloat16 and not model.training
    assert {p.device for p in model.parameters()} == {CPU}
    assert tokenizer.decode(tokenizer.encode("Hello")) == "Hello"
    assert [(call["dtype"], call["device_map"]) for call in from_pretrained_calls] == [(torch.bfloat16, CPU)], \
        "the weights are placed as they load, not loaded in float32 and moved"
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded ")]
    assert line.startswith("loaded tiny-chat: 0.8M parameters, bfloat16, on cpu; weights 1.5 MiB, process resident")


def test_auto_keeps_the_checkpoints_dtype(from_pretrained_calls):
    model, _ = load_model(bundled_model_path(), "cpu", progress=False)
    assert model.dtype == torch.float32 and from_pretrained_calls[0]["dtype"] == "auto"


def test_a_model_that_does_not_fit_is_refused_before_anything_loads(monkeypatch, from_pretrained_calls):
    needed = checkpoint_size(bundled_model_path()).bytes_as(torch.float32)
    monkeypatch.setattr(model_loading, "free_memory", lambda device: needed - 1)
    with pytest.raises(ModelTooLargeError, match="in float32, but cpu has only"):
        load_model(bundled_model_path(), "cpu", "float32", progress=False)
    assert from_pretrained_calls == []
    model, _ = load_model(bundled_model_path(), "cpu", "bfloat16", progress=False)  # half the bytes: it fits
    assert model.dtype == torch.bfloat16
