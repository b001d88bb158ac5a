import pytest
import torch

from chatstream.engine.device import resolve_device
from chatstream.exceptions import ConfigurationError


def test_names_and_objects():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    if torch.cuda.device_count() >= 2:
        assert resolve_device("cuda:1").type == "cuda"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("asked", ["cuda", "cuda:0", torch.device("cuda", 1)])
def test_cuda_on_a_machine_without_it_is_refused_up_front_saying_what_to_do(asked):
    with pytest.raises(ConfigurationError, match=r"sees no CUDA GPU here; use device 'cpu'"):
        resolve_device(asked)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_mps_on_a_machine_without_it_is_refused():
    with pytest.raises(ConfigurationError, match="MPS"):
        resolve_device("mps")


def test_none_picks_an_available_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device(None).type == expected


@pytest.mark.parametrize("bad", ["gpu", "tpu", 3.5])
def test_unknown_device_is_refused(bad):
    with pytest.raises(ConfigurationError, match="`device`"):
        resolve_device(bad)


def test_num_gpus_checks():
    with pytest.raises(ConfigurationError, match="`num_gpus` \\(=0\\)"):
        resolve_device("cpu", 0)
    with pytest.raises(ConfigurationError, match="needs device 'cuda'"):
        resolve_device("cpu", 2)
    if torch.cuda.device_count() < 64:
        with pytest.raises(ConfigurationError, match=r"exceeds|sees no CUDA GPU"):
            resolve_device("cuda", 64)
