"""Which torch device the engine runs on."""

from __future__ import annotations

import torch

from ..exceptions import ConfigurationError

DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(device: str | torch.device | None = None, num_gpus: int | None = None) -> torch.device:
    """Turn ``device`` ("cpu", "cuda", "cuda:1", "mps", a ``torch.device`` or None) into a checked device.

    None picks cuda when available, then mps, else cpu. ``num_gpus`` (None or >= 1) must not exceed
    the GPUs present; a model spread over several GPUs takes its inputs on the first one.
    """
    if num_gpus is not None and (isinstance(num_gpus, bool) or not isinstance(num_gpus, int) or num_gpus < 1):
        raise ConfigurationError(f"`num_gpus` (={num_gpus!r}) must be None or an integer >= 1.")
    if device is None:
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    try:
        resolved = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigurationError(
            f"`device` (={device!r}) is not a device torch knows; use one of "
            f"{', '.join(map(repr, DEVICE_TYPES))}, 'cuda:N' or a torch.device."
        ) from error
    if resolved.type not in DEVICE_TYPES:
        raise ConfigurationError(
            f"`device` (={device!r}) has type {resolved.type!r}; chatstream runs on "
            f"{', '.join(map(repr, DEVICE_TYPES))}."
        )
    _check_available(resolved, device)
    if num_gpus is not None and num_gpus > 1:
        if resolved.type != "cuda":
            raise ConfigurationError(f"`num_gpus` (={num_gpus}) > 1 needs device 'cuda', got {device!r}.")
        available = torch.cuda.device_count()
        if num_gpus > available:
            raise ConfigurationError(f"`num_gpus` (={num_gpus}) exceeds the {available} GPU(s) present.")
    return resolved


def _check_available(resolved: torch.device, asked: object) -> None:
    """Refuse, before any model is loaded or moved, a device this machine does not have."""
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
            raise ConfigurationError(
                f"`device` (={asked!r}) asks for CUDA, but torch {torch.__version__} ({build}) sees no CUDA GPU "
                "here; use device 'cpu' (or leave it unset to pick what is there), or install a CUDA build of "
                "torch on a machine with an NVIDIA GPU and driver."
            )
        if resolved.index is not None and resolved.index >= count:
            raise ConfigurationError(
                f"`device` (={asked!r}) names GPU {resolved.index}, but only {count} GPU(s) are present "
                f"(cuda:0 to cuda:{count - 1})."
            )
    elif resolved.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigurationError(
            f"`device` (={asked!r}) asks for Apple's MPS, which this machine or torch build does not have; "
            "use device 'cpu', or leave it unset to pick what is there."
        )
