"""The ChatStream 0.3 module path of ``AbstractRequestHandler`` (a re-export from chatstream.request_handler)."""

from . import AbstractRequestHandler

__all__ = ["AbstractRequestHandler"]
