"""ChatStream 0.3's ``get_resource_usage(opts)``, over ``chatstream.serving.resource_usage``."""

from __future__ import annotations

from ..serving.resource_usage import get_resource_usage as _get_resource_usage


def get_resource_usage(opts: dict | None = None) -> dict:
    """Memory in use, in 0.3's shape; ``opts``: 0.3's ``{"num_gpus": int, "device": ...}``."""
    opts = opts or {}
    return _get_resource_usage(device=opts.get("device"), num_gpus=opts.get("num_gpus"))


__all__ = ["get_resource_usage"]
