"""JSON encoding of tokenizer call arguments and results, and the key a recorded call is found by.

Results keep their type (str, lists, ``BatchEncoding``, tensors) so a replayed call returns what the
live one did. Argument keys flatten tensors and tuples to lists: ``decode(tensor)`` and
``decode(list)`` ask the same question.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .cassette import canonical_json

_TYPE = "__type__"


def encode_value(value: Any) -> Any:
    """A JSON-able form of a tokenizer result that ``decode_value`` turns back into the same value."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return {_TYPE: "tensor", "dtype": str(value.dtype).removeprefix("torch."), "data": value.tolist()}
    if isinstance(value, np.ndarray):
        return {_TYPE: "ndarray", "dtype": str(value.dtype), "data": value.tolist()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {_TYPE: "tuple", "items": [encode_value(v) for v in value]}
    if isinstance(value, list):
        return [encode_value(v) for v in value]
    if type(value).__name__ == "BatchEncoding" and isinstance(value, Mapping):
        return {_TYPE: "BatchEncoding", "data": {str(k): encode_value(v) for k, v in value.items()}}
    if isinstance(value, Mapping):
        encoded = {str(k): encode_value(v) for k, v in value.items()}
        return {_TYPE: "dict", "data": encoded} if _TYPE in encoded else encoded
    return {_TYPE: "repr", "repr": repr(value)}


def decode_value(value: Any) -> Any:
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get(_TYPE)
    if kind is None:
        return {k: decode_value(v) for k, v in value.items()}
    if kind == "tensor":
        return torch.tensor(value["data"], dtype=getattr(torch, value["dtype"]))
    if kind == "ndarray":
        return np.asarray(value["data"], dtype=value["dtype"])
    if kind == "tuple":
        return tuple(decode_value(v) for v in value["items"])
    if kind == "BatchEncoding":
        from transformers import BatchEncoding

        return BatchEncoding({k: decode_value(v) for k, v in value["data"].items()})
    if kind == "dict":
        return {k: decode_value(v) for k, v in value["data"].items()}
    return value.get("repr")


_SCALARS = (type(None), bool, int, float, str)


def normalize_arg(value: Any) -> Any:
    """The JSON form of an argument as used in keys: tensors, arrays and tuples become lists."""
    if type(value) in _SCALARS or isinstance(value, _SCALARS):
        return value
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        if all(type(v) is int for v in value):  # the common case: a list of token ids
            return list(value)
        return [normalize_arg(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): normalize_arg(v) for k, v in value.items()}
    return {_TYPE: "repr", "repr": repr(value)}


def call_key(method: str, args: list, kwargs: dict) -> str:
    """The key of a tokenizer call whose arguments are already normalised."""
    return canonical_json([method, args, kwargs])
