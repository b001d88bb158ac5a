"""Loading a model as users load them: in the dtype asked for, straight onto its device, checked to fit first.

``load_model(path, device, dtype)`` reads the checkpoint's size from its safetensors headers (no weights
read), refuses with ``ModelTooLargeError`` a model whose weights do not fit the device's free memory,
then lets transformers place the weights on the device as they load (``device_map``: no float32 copy on
the CPU first) and logs the model's size, dtype, device and the memory in use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..exceptions import ConfigurationError, ModelTooLargeError
from .device import resolve_device
from .model_source import resolve_model_dir

logger = logging.getLogger("chatstream")

DTYPES: dict[str, torch.dtype | None] = {
    "auto": None, "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
"""The ``dtype`` choices: ``auto`` keeps the checkpoint's own dtype."""

_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}
_OTHER_WEIGHTS = ("pytorch_model*.bin", "*.pt", "*.pth")


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"auto"``/None -> None (the checkpoint's own dtype); a name in DTYPES or a floating torch.dtype -> it."""
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype in DTYPES.values()):
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ConfigurationError(f"`dtype` (={dtype!r}) must be one of {', '.join(map(repr, DTYPES))}: 'auto' keeps the "
                             "checkpoint's own dtype, the others convert the weights as they load.")


@dataclass(frozen=True)
class CheckpointSize:
    """What a checkpoint's weights hold, read from its files without loading them."""

    parameters: int | None  # None when the format does not say (a pickled .bin, never opened here)
    floating_parameters: int  # estimated from the file size (and config dtype) for a .bin
    floating_bytes: int  # bytes of the floating-point tensors, in the checkpoint's own dtypes
    other_bytes: int  # bytes of the rest (integer buffers), which no dtype changes
    dtype: torch.dtype | None  # the floating dtype of most floating parameters

    def bytes_as(self, dtype: torch.dtype | None) -> int:
        """The bytes the weights take once loaded in ``dtype`` (None: the checkpoint's own)."""
        if dtype is None:
            return self.floating_bytes + self.other_bytes
        return self.floating_parameters * dtype.itemsize + self.other_bytes


def _safetensors_tensors(path: Path) -> Iterator[tuple[torch.dtype, int]]:
    from safetensors import safe_open

    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as weights:
            for name in weights.keys():  # noqa: SIM118 - safe_open is not a mapping
                view = weights.get_slice(name)
                numel = 1
                for extent in view.get_shape():
                    numel *= extent
                yield _SAFETENSORS_DTYPES.get(view.get_dtype(), torch.uint8), numel


def _config_dtype(path: Path) -> torch.dtype | None:
    import json

    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    name = config.get("dtype") or config.get("torch_dtype")
    return DTYPES.get(name) if isinstance(name, str) else None


def checkpoint_size(path: str | os.PathLike) -> CheckpointSize:
    """The size of the weights in model directory ``path``: exact from safetensors headers, else from file sizes."""
    path = Path(path)
    counts: dict[torch.dtype, int] = {}
    floating = other = parameters = 0
    for dtype, numel in _safetensors_tensors(path):
        parameters += numel
        if dtype.is_floating_point:
            floating += numel * dtype.itemsize
            counts[dtype] = counts.get(dtype, 0) + numel
        else:
            other += numel * dtype.itemsize
    if parameters:
        most = max(counts, key=counts.__getitem__) if counts else None
        return CheckpointSize(parameters, sum(counts.values()), floating, other, most)
    size = sum(file.stat().st_size for pattern in _OTHER_WEIGHTS for file in path.glob(pattern))
    dtype = _config_dtype(path) or torch.float32
    return CheckpointSize(None, size // dtype.itemsize, size, 0, dtype)


def free_memory(device: torch.device) -> int:
    """Bytes free for new weights on ``device``: the GPU's free memory, else the machine's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available  # cpu, and mps (unified memory)


def check_fits(needed: int, free: int, *, what: str, dtype: torch.dtype | None, device: torch.device) -> None:
    """Raise ModelTooLargeError when ``needed`` bytes of weights exceed the ``free`` bytes of ``device``."""
    if needed <= free:
        return
    shown = _dtype_name(dtype) if dtype is not None else "its own dtype"
    options = ["use another device with more free memory (`--device`)", "or a smaller model"]
    if dtype not in (torch.bfloat16, torch.float16):
        options.insert(0, "load it in half the memory with dtype 'bfloat16' (`--dtype bfloat16`)")
    raise ModelTooLargeError(
        f"{what} needs {_gib(needed)} for its weights alone in {shown}, but {device} has only {_gib(free)} free; "
        f"it was not loaded. To serve it, {', '.join(options)}."
    )


def check_checkpoint_fits(path: str | os.PathLike, dtype: str | torch.dtype | None, device: torch.device) -> None:
    """Raise ModelTooLargeError when the checkpoint at ``path``, loaded in ``dtype``, cannot fit ``device``."""
    torch_dtype = resolve_dtype(dtype)
    size = checkpoint_size(path)
    check_fits(size.bytes_as(torch_dtype), free_memory(device), what=f"the model {path}",
               dtype=torch_dtype or size.dtype, device=device)


def load_model(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = "auto",
    *,
    progress: bool = True,
) -> tuple[Any, Any]:
    """Load a local HF causal LM directory: ``(model, tokenizer)``, the model in eval mode on ``device``.

    ``dtype``: 'auto' (the checkpoint's own), 'bfloat16', 'float16' or 'float32'. The weights are checked to fit
    the device before anything loads, then loaded onto it directly; the model's size, dtype, device and the
    memory in use are logged. ``progress`` shows transformers' loading bars.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    path = resolve_model_dir(path)
    check_checkpoint_fits(path, torch_dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    bars = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if progress else hf_logging.disable_progress_bar)()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto" if torch_dtype is None else torch_dtype,
                                                     device_map=device)
    finally:
        (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
    model.eval()
    logger.info("%s", describe_loaded(model, path))
    return model, tokenizer


def describe_loaded(model: Any, path: str | os.PathLike) -> str:
    """One line on a loaded model: parameters, dtype, device, weight bytes and the memory in use there."""
    parameters = sum(p.numel() for p in model.parameters())
    device = next(model.parameters()).device
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    if device.type == "cuda":
        used = f"{_gib(torch.cuda.memory_allocated(device))} allocated on {device}"
    else:
        import psutil

        used = f"process resident memory {_gib(psutil.Process().memory_info().rss)}"
    return (f"loaded {Path(path).name}: {parameters / 1e6:.1f}M parameters, {_dtype_name(model.dtype)}, "
            f"on {device}; weights {_gib(weights)}, {used}")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _gib(count: int) -> str:
    if count >= 2**30:
        return f"{count / 2**30:.2f} GiB"
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count / 2**10:.1f} KiB"
