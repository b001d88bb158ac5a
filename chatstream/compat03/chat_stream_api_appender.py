"""ChatStream 0.3's ``append_apis(chat_stream, app, opts, logger, eloc)``, over ``chatstream.serving.api``."""

from __future__ import annotations

from typing import Any

from ..serving import api


def append_apis(chat_stream: Any, app: Any, opts: dict | None, logger: Any = None, eloc: Any = None) -> list[str]:
    """Register the endpoints ``opts`` enables (``include`` / ``exclude`` / ``all``, at most one, else a
    ValueError) on ``app``. ``logger`` and ``eloc`` are accepted as in 0.3; ChatStream logs to ``chatstream``."""
    return api.append_apis(chat_stream, app, opts)


__all__ = ["append_apis"]
