"""Which torch device the engine runs on."""

from __future__ import annotations

import torch

from .exceptions import ConfigurationError

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
    if num_gpus is not None and num_gpus > 1:
        if resolved.type != "cuda":
            raise ConfigurationError(f"`num_gpus` (={num_gpus}) > 1 needs device 'cuda', got {device!r}.")
        available = torch.cuda.device_count()
        if num_gpus > available:
            raise ConfigurationError(f"`num_gpus` (={num_gpus}) exceeds the {available} GPU(s) present.")
    return resolved
