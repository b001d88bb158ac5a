"""Serving the chat page and its assets from the package (``chatstream/web/``), never from a CDN."""

from __future__ import annotations

import json
import logging
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


STYLE_NAMES = ("casual_white",)  # 0.3's only style (its page drew every style_name as casual_white)
_warned: set[str] = set()


def check_ui_params(ui_init_params: dict | None, logger: logging.Logger) -> None:
    """Warn once about 0.3 web UI options this page does not implement, naming what replaces them.

    Implemented: welcomeMessage, clearContextOnReload, developMode (cookies sent cross-origin), and
    style_opts' labels, regenerate_enabled and icons (show_ai_icon, show_human_icon,
    show_human_icon_on_input, ai_icon_url, human_icon_url; no default icon URLs: nothing is fetched
    from another site unless the app names it).
    """
    params = ui_init_params or {}
    style_opts = params.get("style_opts") or {}
    notes = []
    style_name = params.get("style_name")
    if style_name is not None and style_name not in STYLE_NAMES:
        notes.append(f"style_name={style_name!r} does not exist (0.3 had only {STYLE_NAMES[0]!r}, the look of "
                     "this page); restyle the page by serving your own chatstream.css")
    if style_opts.get("debug_window_enabled"):
        notes.append("style_opts.debug_window_enabled has no effect (0.3 never implemented it either); read "
                     "the prompt with GET /get_prompt (a role that allows 'get_prompt') instead")
    for note in notes:
        if note not in _warned:
            _warned.add(note)
            logger.warning("web UI option: %s.", note)


class ReadyResponse(Response):
    """A Response that may also be awaited (giving itself). ChatStream 0.3's examples return
    ``chat_stream.index(response, ...)`` from plain ``def`` routes and ``await`` it in ``async def`` ones;
    both work with this."""

    def __await__(self):
        return self._itself().__await__()

    async def _itself(self) -> ReadyResponse:
        return self


@cache
def _read(name: str) -> str:
    return resources.files("chatstream").joinpath("web", name).read_text(encoding="utf-8")


def asset_response(name: str) -> Response:
    """One of the page's files, with its content type."""
    return ReadyResponse(_read(name), media_type=ASSETS[name], headers=PAGE_HEADERS)


def page_response(ui_init_params: dict | None = None) -> Response:
    """The chat page, with ``ui_init_params`` (0.3's web_ui_params) embedded as inert JSON."""
    config = json.dumps(ui_init_params or {}, ensure_ascii=False)
    # "<" escaped so no value can close the script element
    config = config.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    tag = f'<script id="chatstream-config" type="application/json">{config}</script>'
    page = _read("index.html").replace(CONFIG_MARKER, tag)
    return ReadyResponse(page, media_type=ASSETS["index.html"], headers=PAGE_HEADERS)
