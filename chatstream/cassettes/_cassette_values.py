"""Content addresses and JSON values: the keys recorded calls are found by, and tokenizer results as JSON.

A model forward is found by the hash of the whole token history it continues, how much of it came
from the cache, and its attention mask; a sampler call by its history, sampling parameters and
seed; a tokenizer call by its method and arguments. Tokenizer results keep their type (str, lists,
tensors; a ``BatchEncoding`` replays as ``RecordedEncoding``, which reads the same without importing
transformers) so a replayed call returns what the live one did. Argument keys flatten
tensors and tuples to lists: ``decode(tensor)`` and ``decode(list)`` ask the same question.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections import UserDict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

_TYPE = "__type__"
RECORDED_TOKENIZER_METHODS = (
    "__call__", "encode", "decode", "batch_decode", "apply_chat_template", "tokenize",
    "convert_ids_to_tokens", "convert_tokens_to_ids",
)
"""The tokenizer methods a recording proxy records and a MockTokenizer replays."""


def history_hash(ids: Iterable[int] | torch.Tensor) -> str:
    """The content address of a token history: 16 hex digits of BLAKE2b over little-endian int64 ids."""
    return hashlib.blake2b(_id_bytes(ids), digest_size=8).hexdigest()


def _id_bytes(ids: Iterable[int] | torch.Tensor) -> bytes:
    if isinstance(ids, torch.Tensor):
        if ids.device.type != "cpu" or ids.dtype != torch.int64:
            ids = ids.to("cpu", torch.int64)
        return ids.detach().numpy().astype("<i8", copy=False).tobytes()
    ids = ids if isinstance(ids, list) else list(ids)
    if len(ids) == 1:  # a decode step
        return _ONE_ID.pack(ids[0])
    return struct.pack(f"<{len(ids)}q", *ids)


_ONE_ID = struct.Struct("<q")


class HistoryHasher:
    """An incremental ``history_hash``: ``extend`` returns a new hasher without rehashing the prefix."""

    __slots__ = ("_h", "_hex")

    def __init__(self, _h: Any = None) -> None:
        self._h = _h if _h is not None else hashlib.blake2b(digest_size=8)
        self._hex: str | None = None

    def extend(self, ids: Iterable[int] | torch.Tensor) -> HistoryHasher:
        h = self._h.copy()
        h.update(_id_bytes(ids))
        return HistoryHasher(h)

    def hexdigest(self) -> str:
        if self._hex is None:  # a hasher is never updated after construction: its digest is fixed
            self._hex = self._h.hexdigest()
        return self._hex


class TokenHistory:
    """A token history and its running hash, kept in a CPU int64 buffer that grows by doubling.

    ``append`` costs O(new ids), and ``holds`` compares a tensor of ids with the history at memcmp
    speed, so a sampler call can reuse the hash of the forward it follows instead of rehashing.
    """

    def __init__(self, ids: list[int] | None = None, hasher: HistoryHasher | None = None) -> None:
        ids = list(ids or [])
        self._buffer = torch.zeros(max(64, 2 * len(ids)), dtype=torch.long)
        self._array = self._buffer.numpy()  # the same memory, for cheap writes of a few ids
        self._array[: len(ids)] = ids
        self._length = len(ids)
        self.hasher = hasher or HistoryHasher().extend(ids)

    @property
    def ids(self) -> list[int]:
        """The token history, as a new list."""
        return self._array[: self._length].tolist()

    def __len__(self) -> int:
        return self._length

    def holds(self, ids: torch.Tensor) -> bool:
        """Whether ``ids`` (shaped (1, seq) or (seq,)) is exactly this history."""
        if ids.shape[-1] != self._length or ids.dtype != torch.int64 or not ids.is_cpu:
            return False
        try:
            return ids.numpy().tobytes() == self._array[: self._length].tobytes()  # a memcmp
        except RuntimeError:  # a tensor that requires grad
            return torch.equal(ids.reshape(-1), self._buffer[: self._length])

    def prefix(self, length: int) -> TokenHistory:
        """A new, independent history of the first ``length`` ids (the whole history: the same hash)."""
        if length == self._length:
            return type(self)(self.ids, self.hasher)
        return type(self)(self._array[:length].tolist())

    def append(self, new_ids: list[int], hasher: HistoryHasher) -> None:
        """Extend the history in place; ``hasher`` must hash the result (``self.hasher.extend(new_ids)``)."""
        end = self._length + len(new_ids)
        if end > len(self._array):
            buffer = torch.zeros(2 * end, dtype=torch.long)
            buffer[: self._length] = self._buffer[: self._length]
            self._buffer, self._array = buffer, buffer.numpy()
        if len(new_ids) == 1:  # a decode step: a scalar write is several times cheaper than a slice's
            self._array[self._length] = new_ids[0]
        else:
            self._array[self._length : end] = new_ids
        self._length = end
        self.hasher = hasher


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def attention_mask_code(mask: torch.Tensor | None, length: int) -> str | list[int] | None:
    """How a forward's attention mask is kept: None, "ones" (all ones over the whole history) or the row."""
    if mask is None:
        return None
    if mask.shape == (1, length) and _all_nonzero(mask):
        return "ones"
    return mask[0].tolist()


_INT64_ONES = np.ones(8192, dtype=np.int64).tobytes()  # the decode loops' int64 masks, up to 8192 positions


def _all_nonzero(mask: torch.Tensor) -> bool:
    if mask.dtype == torch.int64 and mask.is_cpu and not mask.requires_grad:
        data = mask.numpy().tobytes()
        if data == _INT64_ONES[: len(data)]:  # a memcmp: cheaper than a NumPy reduction on every decode step
            return True
    if mask.is_cpu:
        try:
            return bool(mask.numpy().all())  # NumPy's reduction is about twice as fast on short rows
        except (TypeError, RuntimeError):  # bfloat16, a tensor that requires grad
            pass
    return bool(mask.all())


def forward_key(history: str, prefix_len: int, mask: str | list[int] | None) -> str:
    """A forward's address: its whole history's hash, how much of it the cache held, and the mask."""
    mask_part = "-" if mask is None else "1" if mask == "ones" else "m" + history_hash(mask)
    return f"{history}/{prefix_len}/{mask_part}"


def history_forward_key(history: str, mask: str | list[int] | None) -> str:
    """A forward's address without how much of it the cache held: the last position's logits depend on the
    whole history only, so a forward recorded after a whole prefill answers one split by a prefix cache."""
    return forward_key(history, -1, mask)


def sample_key(history: str, params: dict | str, seed: int | None) -> str:
    """A sampler call's address: the history it got, the sampling parameters (a dict, or its
    ``canonical_json``) and the generator's seed."""
    return f"{history}/{params if isinstance(params, str) else canonical_json(params)}/{seed}"


# -- tokenizer call values -------------------------------------------------------------------------------


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
    if type(value).__name__ in ("BatchEncoding", "RecordedEncoding") and isinstance(value, Mapping):
        return {_TYPE: "BatchEncoding", "data": {str(k): encode_value(v) for k, v in value.items()}}
    if isinstance(value, Mapping):
        encoded = {str(k): encode_value(v) for k, v in value.items()}
        return {_TYPE: "dict", "data": encoded} if _TYPE in encoded else encoded
    return {_TYPE: "repr", "repr": repr(value)}


class RecordedEncoding(UserDict):
    """A replayed ``BatchEncoding`` (what a tokenizer's ``__call__`` returns), without importing transformers
    (seconds at replay start-up): a mapping whose keys also read as attributes (``enc.input_ids``), with
    ``.data`` and ``.to(device)`` as on transformers' class. ``isinstance(x, BatchEncoding)`` is False."""

    def __getattr__(self, name: str) -> Any:
        data = self.__dict__.get("data")
        if data is not None and name in data:
            return data[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r} (its keys: {list(data or {})})")

    def to(self, device: Any) -> RecordedEncoding:
        """Move its tensors to ``device`` in place, as ``BatchEncoding.to`` does; returns itself."""
        self.data = {k: v.to(device=device) if isinstance(v, torch.Tensor) else v for k, v in self.data.items()}
        return self

    def __repr__(self) -> str:
        return f"RecordedEncoding({self.data!r})"


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
        return RecordedEncoding({k: decode_value(v) for k, v in value["data"].items()})
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


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
GENERATE_CALL = "model.generate"
"""The ``fn`` of a recorded ``model.generate()`` call (tokenizer calls are named by their method)."""


def generate_call_args(args: tuple, kwargs: dict) -> tuple[list, dict]:
    """The recorded arguments of a ``model.generate()`` call: as JSON, without the ``streamer`` (an output
    channel), objects whose repr holds a memory address named without it. Its key is ``call_key``'s."""
    kept = {k: v for k, v in kwargs.items() if k != "streamer"}
    normalized = _strip_addresses(normalize_arg([list(args), kept]))
    return normalized[0], normalized[1]


def _strip_addresses(value: Any) -> Any:
    if isinstance(value, list):
        return [_strip_addresses(v) for v in value]
    if isinstance(value, dict):
        if value.get(_TYPE) == "repr":
            return {_TYPE: "repr", "repr": _ADDRESS.sub("", value["repr"])}
        return {k: _strip_addresses(v) for k, v in value.items()}
    return value



# -- what each recorded tokenizer method may have returned (checked by the loader) ------------------------

_INT_DTYPES = ("int64", "int32", "int16", "int8", "uint8")


def _ints(value: Any) -> bool:
    return isinstance(value, list) and all(type(v) is int for v in value)


def _token_ids(value: Any) -> bool:
    """Token ids as recorded: a list of ints, a batch (a list of such lists), or an integer tensor/array of them."""
    if isinstance(value, dict) and value.get(_TYPE) in ("tensor", "ndarray"):
        return value.get("dtype") in _INT_DTYPES and _token_ids(value.get("data"))
    return _ints(value) or (isinstance(value, list) and all(_ints(row) for row in value))


def _mapping_data(value: Any) -> dict | None:
    """The keys of a recorded ``BatchEncoding`` or dict (None when ``value`` is not one)."""
    if not isinstance(value, dict) or value.get(_TYPE) in ("tensor", "ndarray", "tuple", "repr"):
        return None
    data = value.get("data") if value.get(_TYPE) in ("BatchEncoding", "dict") else value
    return data if isinstance(data, dict) else None


def _encoding(value: Any) -> bool:
    """A ``__call__`` result: a mapping whose ``input_ids`` (and ``attention_mask``, if kept) are token ids."""
    data = _mapping_data(value)
    return data is not None and _token_ids(data.get("input_ids")) and \
        ("attention_mask" not in data or _token_ids(data["attention_mask"]))


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# method -> (check of its recorded result, what the result must be, in words)
_OUTPUT_RULES: dict[str, tuple[Any, str]] = {
    "decode": (lambda v: isinstance(v, str), "a string"),
    "batch_decode": (_strings, "a list of strings"),
    "encode": (_token_ids, "token ids (a list of ints, a list of such lists, or an integer tensor)"),
    # an unknown token converts to the tokenizer's unk_token_id, which is None when it has none
    "convert_tokens_to_ids": (lambda v: v is None or type(v) is int or
                              (isinstance(v, list) and all(x is None or type(x) is int for x in v)),
                              "an int or a list of ints"),
    "__call__": (_encoding, "a mapping whose input_ids are token ids (a list of ints or a list of such lists)"),
    "apply_chat_template": (lambda v: isinstance(v, str) or _token_ids(v) or _encoding(v) or _strings(v),
                            "a string, token ids, or a mapping whose input_ids are token ids"),
    "tokenize": (_strings, "a list of strings"),
    "convert_ids_to_tokens": (lambda v: isinstance(v, str) or _strings(v), "a string or a list of strings"),
}


def recorded_output_problem(method: str, out: Any) -> str | None:
    """What is wrong with ``out``, the recorded JSON result of the tokenizer method ``method`` (None: nothing;
    a method the runtime does not replay, such as ``model.generate``, is not judged here)."""
    rule = _OUTPUT_RULES.get(method)
    if rule is None or rule[0](out):
        return None
    return f"must be {rule[1]} for a recorded {method} call"
