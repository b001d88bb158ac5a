"""A CPU model's continued prefill reads grouped key/value heads in SDPA instead of copying the history."""

from __future__ import annotations

import inspect
import os

import pytest
import torch
import transformers.integrations.sdpa_attention as hf_sdpa
from transformers import LlamaConfig, LlamaForCausalLM

from chatstream.engine import attention_kernel
from chatstream.engine.attention_kernel import GQA_SWITCH, prefer_grouped_query_sdpa
from chatstream.engine.model_cache import cache_argument, output_cache
from chatstream.engine.prefix_cache import copy_prefix

HONOURED = GQA_SWITCH in inspect.getsource(hf_sdpa)  # transformers >= 5.25 reads the switch


def grouped_query_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256)
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).eval()


def continued_prefill(model: LlamaForCausalLM, ids: torch.Tensor, cached: int) -> torch.Tensor:
    """Logits of ``ids[cached:]`` prefilled on a cache holding ``ids[:cached]`` (what a later turn does)."""
    with torch.inference_mode():
        full = output_cache(model(input_ids=ids[:, :cached], use_cache=True))
        cache = copy_prefix(full, cached)
        mask = torch.ones_like(ids)
        return model(input_ids=ids[:, cached:], attention_mask=mask, use_cache=True,
                     **{cache_argument(model): cache}).logits


@pytest.fixture
def switch_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """The switch absent for the test, and as it was after it (setenv records it; delenv alone would not)."""
    monkeypatch.setenv(GQA_SWITCH, "0")
    monkeypatch.delenv(GQA_SWITCH)


def test_a_cpu_device_sets_the_switch_when_it_is_unset(switch_unset: None) -> None:
    assert prefer_grouped_query_sdpa(torch.device("cpu")) is True
    assert os.environ[GQA_SWITCH] == "1"


def test_the_users_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GQA_SWITCH, "0")
    assert prefer_grouped_query_sdpa(torch.device("cpu")) is False
    assert os.environ[GQA_SWITCH] == "0"


def test_a_cuda_device_is_left_to_transformers(switch_unset: None) -> None:
    assert prefer_grouped_query_sdpa(torch.device("cuda")) is False
    assert GQA_SWITCH not in os.environ


def test_a_torch_whose_sdpa_cannot_read_grouped_heads_keeps_them_expanded(
    monkeypatch: pytest.MonkeyPatch, switch_unset: None
) -> None:
    monkeypatch.setattr(attention_kernel, "_checked", [False])
    assert prefer_grouped_query_sdpa(torch.device("cpu")) is False
    assert GQA_SWITCH not in os.environ


def test_grouped_heads_answer_as_expanded_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    model = grouped_query_model()
    ids = torch.randint(1, 97, (1, 40), generator=torch.Generator().manual_seed(1))
    monkeypatch.setenv(GQA_SWITCH, "0")
    expanded = continued_prefill(model, ids, 30)
    monkeypatch.setenv(GQA_SWITCH, "1")
    grouped = continued_prefill(model, ids, 30)
    torch.testing.assert_close(grouped, expanded, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not HONOURED, reason=f"this transformers does not read {GQA_SWITCH}: it expands grouped heads")
def test_a_continued_prefill_asks_sdpa_for_grouped_heads(monkeypatch: pytest.MonkeyPatch, switch_unset: None) -> None:
    model = grouped_query_model()
    ids = torch.randint(1, 97, (1, 40), generator=torch.Generator().manual_seed(2))
    calls: list[tuple[int, bool]] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, **kwargs):
        calls.append((key.shape[1], bool(kwargs.get("enable_gqa"))))
        return sdpa(query, key, value, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    prefer_grouped_query_sdpa(torch.device("cpu"))
    continued_prefill(model, ids, 30)
    continued = calls[-2:]  # the continued prefill's two layers
    assert continued == [(2, True), (2, True)], calls  # two key/value heads, not eight copies
