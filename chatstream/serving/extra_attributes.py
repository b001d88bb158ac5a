"""Attributes a ChatStream makes on first use, from factories registered by name.

A layer above serving adds to ChatStream without serving importing it: ``chatstream.compat03`` registers
ChatStream 0.3's ``client_role_wrapper`` and ``client_role_verifier`` here. A factory is named as
``"module:callable"``, imported when the attribute is first read, and called with the ChatStream.
Imports nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

FACTORIES: dict[str, str] = {}


def register(name: str, factory: str) -> None:
    """Make ``chat_stream.<name>`` on first use with ``factory`` (``"module:callable"``)."""
    FACTORIES[name] = factory


def make(owner: Any, name: str) -> Any:
    """The value of attribute ``name`` for ``owner``; AttributeError when no factory is registered for it."""
    factory = FACTORIES.get(name)
    if factory is None:
        raise AttributeError(f"{type(owner).__name__!r} object has no attribute {name!r}")
    module, _, attribute = factory.partition(":")
    return getattr(importlib.import_module(module), attribute)(owner)


__all__ = ["FACTORIES", "make", "register"]
