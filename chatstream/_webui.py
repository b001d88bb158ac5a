"""Serving the chat page and its assets from the package (``chatstream/web/``), never from a CDN."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from starlette.responses import Response

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "chatstream.js": "text/javascript; charset=utf-8",
    "chatstream.css": "text/css; charset=utf-8",
}
CONFIG_MARKER = "<!--CHATSTREAM_CONFIG-->"
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: https:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; base-uri 'none'; frame-ancestors 'self'",
}


@cache
def _read(name: str) -> str:
    return resources.files("chatstream").joinpath("web", name).read_text(encoding="utf-8")


def asset_response(name: str) -> Response:
    """One of the page's files, with its content type."""
    return Response(_read(name), media_type=ASSETS[name], headers=PAGE_HEADERS)


def page_response(ui_init_params: dict | None = None) -> Response:
    """The chat page, with ``ui_init_params`` (0.3's web_ui_params) embedded as inert JSON."""
    config = json.dumps(ui_init_params or {}, ensure_ascii=False)
    # "<" escaped so no value can close the script element
    config = config.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    tag = f'<script id="chatstream-config" type="application/json">{config}</script>'
    page = _read("index.html").replace(CONFIG_MARKER, tag)
    return Response(page, media_type=ASSETS["index.html"], headers=PAGE_HEADERS)
