"""ChatStream 0.3's ``ensure_torch_device``, over ``chatstream.engine.device.resolve_device``."""

from __future__ import annotations

import torch

from ..engine.device import resolve_device


def ensure_torch_device(device: str | torch.device | None) -> torch.device | None:
    """None stays None; anything else is checked by ``resolve_device``, which raises ``ConfigurationError`` for a
    device this machine lacks (0.3 printed the error and returned None)."""
    return None if device is None else resolve_device(device)


__all__ = ["ensure_torch_device"]
