"""ChatStream 0.3's ``DEFAULT_FINISH_TOKEN``, the marker that ends each streamed chunk (chatstream.serving._http)."""

from ..serving._http import FINISH_TOKEN as DEFAULT_FINISH_TOKEN

__all__ = ["DEFAULT_FINISH_TOKEN"]
