"""The module ``__getattr__`` of a 0.3 module whose names are partly gone: those raise ``Removed03Error``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..exceptions import Removed03Error


def removed_names(module: str, replacements: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__``: ``replacements`` maps each gone 0.3 name to what replaces it (a sentence)."""
    old_path = module.replace(".compat03", "", 1)

    def __getattr__(name: str) -> Any:
        if name in replacements:
            raise Removed03Error(f"{old_path}.{name} (ChatStream 0.3) is gone: {replacements[name]}",
                                 name=old_path)
        raise AttributeError(f"module {old_path!r} has no attribute {name!r}")

    return __getattr__
