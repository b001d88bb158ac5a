"""A batched forward seen row by row: how recording and replay key each row of a batch.

The batching engine (``chatstream.engine.batching``) runs one forward over several sequences, each
left-padded to a common length. The cache it passes carries ``chatstream_rows``: per row, in batch
order, the *row handle*, the cache object that row's own first (batch size 1) forward returned. A
wrapper that keys forwards by token history (the recorder, ``MockModel``) finds each row's history
through that handle, and ``split_rows`` gives each row as the unbatched decode loop would have
passed it: its real new ids (padding dropped), how many real positions its cache holds, and its
attention mask without the padding. So a row's recorded key is its unpadded history, and its mask
code is the one an unbatched forward gets: a cassette is the same whether recorded batched or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

ROWS_ATTR = "chatstream_rows"
"""The attribute of a batched cache that holds its row handles, in batch order."""


@dataclass(frozen=True)
class Row:
    """One row of a batched forward, without its padding."""

    handle: Any  # the row's own cache object (what its history is found by)
    past_len: int  # real positions the cache held for this row before the forward
    new_ids: list[int]  # the row's real (unpadded) input ids
    mask: torch.Tensor  # (1, past_len + len(new_ids)): the row's attention mask, padding dropped


def row_handles(cache: Any) -> tuple | None:
    """The row handles a batched cache carries, or None."""
    rows = getattr(cache, ROWS_ATTR, None) if cache is not None else None
    return tuple(rows) if rows is not None else None


def split_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cache: Any) -> list[Row] | None:
    """Each row of a batched forward as the unbatched loop would have run it; None when ``cache`` has no
    row handles for every row (it was not stacked by the batching engine).

    A position is padding where the row's attention mask is 0: the engine pads on the left only,
    so the rest of the row is what the row alone would have seen.
    """
    handles = row_handles(cache)
    batch, width = input_ids.shape
    if handles is None or len(handles) != batch:
        return None
    if attention_mask is None:
        attention_mask = torch.ones((batch, width), dtype=torch.long)
    past = attention_mask.shape[1] - width
    rows = []
    for i, handle in enumerate(handles):
        mask_row = attention_mask[i]
        real = mask_row != 0
        new_ids = input_ids[i][real[past:].to(input_ids.device)].tolist()
        past_len = int(real[:past].sum())
        rows.append(Row(handle, past_len, new_ids, mask_row[real].unsqueeze(0)))
    return rows
