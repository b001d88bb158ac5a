"""The ChatStream 0.3 module path of ``SimpleSessionRequestHandler`` (a re-export from chatstream.request_handler)."""

from . import SimpleSessionRequestHandler

__all__ = ["SimpleSessionRequestHandler"]
