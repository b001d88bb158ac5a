"""The ChatStream 0.3 helper ``merge_dict`` (kept for apps that import it)."""

from __future__ import annotations


def merge_dict(src_dict: dict, dest_dict: dict | None) -> dict:
    """A copy of ``src_dict`` updated with the values of ``dest_dict`` that are not None."""
    if dest_dict is None:
        return src_dict
    return {**src_dict, **{key: value for key, value in dest_dict.items() if value is not None}}


__all__ = ["merge_dict"]
