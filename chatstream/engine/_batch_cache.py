"""Stacking per-row KV caches into one batched cache and back, with transformers' public Cache API.

Each sequence's cache starts as what its own prefill (batch size 1) returned: its *row handle*. When
the set of running sequences changes, the engine unstacks the batched cache into the handles (each
layer's ``keys``/``values`` become that row's slice, padding dropped) and stacks the new set: every
row left-padded with zeros to the longest, one ``DynamicCache`` whose ``chatstream_rows`` lists the
handles. Between changes the batched cache is used as it is: each step appends one column to all rows.

A cache class that is not a transformers ``DynamicCache`` (``MockCache`` in replay) takes part by
providing ``stack_rows(handles, lengths)`` (a classmethod); the cache it returns provides
``unstack_rows(lengths)``.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import Any

import torch

from ..exceptions import ConfigurationError
from .batch_rows import ROWS_ATTR
from .model_cache import cache_argument
from .prefix_cache import HISTORY_TAG


def batching_unsupported(model: Any) -> str | None:
    """Why the batching engine cannot batch ``model``'s forwards, or None when it can.

    It needs a forward that takes ``attention_mask`` and ``position_ids`` (per-row padding and
    positions) and a cache made of plain ``DynamicLayer`` layers (no sliding window, linear attention
    or quantised layers, whose rows cannot be padded and stacked); a model whose cache class provides
    ``stack_rows`` (the replay ``MockModel``) is batched through it.
    """
    name = type(model).__name__
    try:
        cache_argument(model)
    except ConfigurationError as error:
        return str(error)
    if getattr(model, "chatstream_batched_forward", False):
        return None
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return f"{name}.forward has no signature to read, so per-row masks and positions cannot be checked"
    missing = [p for p in ("attention_mask", "position_ids") if p not in parameters]
    if missing:
        return f"{name}.forward takes no {' or '.join(missing)}, which per-row padding needs"
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "get_text_config"):
        return f"{name} has no transformers config to build its cache layers from"
    if getattr(config, "is_encoder_decoder", False):
        return f"{name} is an encoder-decoder model"
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        layers = DynamicCache(config=config).layers
    except Exception as error:  # a config transformers cannot build a cache from
        return f"transformers cannot build a DynamicCache for {name} ({error})"
    odd = sorted({type(layer).__name__ for layer in layers if type(layer) is not DynamicLayer})
    if odd:
        return f"{name}'s cache has {', '.join(odd)} layers, whose rows cannot be padded and stacked"
    return None


def stack_rows(handles: Sequence[Any], lengths: Sequence[int]) -> Any:
    """One batched cache holding ``handles``' rows, each left-padded with zeros to ``max(lengths)``."""
    custom = getattr(type(handles[0]), "stack_rows", None)
    if custom is not None:
        return custom(handles, lengths)
    from transformers import DynamicCache

    width = max(lengths)
    data = []
    for layers in zip(*(handle.layers for handle in handles), strict=True):
        stacked = []
        for part in ("keys", "values"):
            first = getattr(layers[0], part)
            shape = (len(layers), first.shape[1], width, first.shape[3])
            tensor = torch.zeros(shape, dtype=first.dtype, device=first.device)
            for i, (layer, length) in enumerate(zip(layers, lengths, strict=True)):
                tensor[i, :, width - length :] = getattr(layer, part)[0, :, -length:] if length else 0
            stacked.append(tensor)
        data.append(tuple(stacked))
    cache = DynamicCache(ddp_cache_data=data)
    setattr(cache, ROWS_ATTR, tuple(handles))
    return cache


def unstack_rows(cache: Any, lengths: Sequence[int]) -> None:
    """Give each row handle of ``cache`` its own rows back (``lengths``: each row's real length now)."""
    custom = getattr(cache, "unstack_rows", None)
    if custom is not None:
        custom(lengths)
        return
    handles = getattr(cache, ROWS_ATTR)
    for layers in zip(cache.layers, *(handle.layers for handle in handles), strict=True):
        batched, rows = layers[0], layers[1:]
        width = batched.keys.shape[2]
        for i, (row, length) in enumerate(zip(rows, lengths, strict=True)):
            row.keys = batched.keys[i : i + 1, :, width - length :]
            row.values = batched.values[i : i + 1, :, width - length :]


def copy_row(cache: Any, index: int, length: int) -> Any:
    """A new, compact single-row cache of row ``index`` of the stacked ``cache`` (its last ``length``
    positions: the row's own, padding dropped); ``cache`` is untouched. What the prefix cache keeps of a
    stream that ends while it is stacked."""
    custom = getattr(cache, "copy_row", None)
    if custom is not None:
        return custom(index, length)
    handle = getattr(cache, ROWS_ATTR)[index]
    new = copy.copy(handle)
    layers = []
    for batched, own in zip(cache.layers, handle.layers, strict=True):
        layer = copy.copy(own)
        width = batched.keys.shape[2]
        layer.keys = batched.keys[index : index + 1, :, width - length :].clone()
        layer.values = batched.values[index : index + 1, :, width - length :].clone()
        layers.append(layer)
    new.layers = layers
    tag = handle.__dict__.get(HISTORY_TAG)
    if tag is not None:
        new.__dict__[HISTORY_TAG] = tag.prefix(length)
    return new
