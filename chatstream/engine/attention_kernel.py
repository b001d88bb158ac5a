"""How a grouped-query-attention model's prefill reads its shared key/value heads on the CPU.

A prefill that continues a cached prefix (every later turn of a conversation, with the prefix cache) carries
an attention mask. Given a mask, transformers' SDPA attention keeps its grouped-query kernel for XPU and MPS
only; elsewhere it expands each shared key/value head to every query head (``repeat_kv``): a copy of the
whole cached history, per layer, per prefill, which makes a turn's cost grow with the conversation even when
only its new tokens are computed. torch's CPU SDPA reads grouped heads itself, mask or not
(``enable_gqa=True``); transformers takes that path when ``TRANSFORMERS_SDPA_FORCE_GQA=1``.
"""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger(__name__)

GQA_SWITCH = "TRANSFORMERS_SDPA_FORCE_GQA"


def prefer_grouped_query_sdpa(device: torch.device) -> bool:
    """For a model served on the CPU, let SDPA read grouped key/value heads with a mask; whether it does now.

    Only where the switch is unset (``TRANSFORMERS_SDPA_FORCE_GQA=0`` in the environment keeps transformers'
    choice) and only when this torch's CPU SDPA takes a masked grouped-query call and answers as the expanded
    heads do (checked on a small case, once). A CUDA device is left to transformers: its masked grouped-query
    path falls back to SDPA's math kernel there. The switch is read by transformers per call, for the whole
    process: a process serving a CPU and a CUDA model at once gives both the grouped path.
    """
    if device.type != "cpu":
        return os.environ.get(GQA_SWITCH) == "1"
    if GQA_SWITCH in os.environ:
        return os.environ[GQA_SWITCH] == "1"
    if not _cpu_sdpa_reads_grouped_heads():
        return False
    os.environ[GQA_SWITCH] = "1"
    logger.info("CPU attention: SDPA reads grouped key/value heads itself (%s=1; set it to 0 to expand them)",
                GQA_SWITCH)
    return True


_checked: list[bool] = []


def _cpu_sdpa_reads_grouped_heads() -> bool:
    if not _checked:
        _checked.append(_grouped_equals_expanded())
    return _checked[0]


def _grouped_equals_expanded() -> bool:
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, 4, 3, 8, generator=generator)
    key, value = (torch.randn(1, 2, 5, 8, generator=generator) for _ in range(2))
    mask = torch.ones(1, 1, 3, 5, dtype=torch.bool).tril(diagonal=2)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    try:
        grouped = sdpa(query, key, value, attn_mask=mask, enable_gqa=True)
    except (TypeError, RuntimeError):  # torch < 2.5 has no enable_gqa
        return False
    expanded = sdpa(query, key.repeat_interleave(2, dim=1), value.repeat_interleave(2, dim=1), attn_mask=mask)
    return torch.allclose(grouped, expanded, rtol=1e-5, atol=1e-6)
