"""The ChatStream 0.3 module path of ``to_web_api_path`` (a re-export from chatstream.serving.api)."""

from ..serving.api import to_web_api_path

__all__ = ["to_web_api_path"]
