"""pytest plugin for ChatStream: record model cassettes with ``pytest --probe``, replay them in CI.

The plugin itself is ``pytest_chatstream.plugin`` (registered through the ``pytest11`` entry point);
:func:`asgi_client` gives an httpx client, lifespan included, on any ASGI app.
"""

from __future__ import annotations

from typing import Any

from ._session import StaleCassetteWarning

__all__ = ["StaleCassetteWarning", "asgi_client", "lifespan"]


def __getattr__(name: str) -> Any:
    # httpx is imported on first use: every pytest run of a project with chatstream loads this package.
    if name in ("asgi_client", "lifespan"):
        from . import _asgi

        return getattr(_asgi, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
