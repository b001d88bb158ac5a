"""The ChatStream 0.3 ``EasyLocale``: ``chatstream.serving.locale.Locale`` built from 0.3's options dict."""

from __future__ import annotations

from ..serving.locale import Locale


class EasyLocale(Locale):
    """``EasyLocale({"locale": "ja-JP"})``; ``to_str({"en": ..., "ja": ...})`` picks the language's text.

    0.3's ``fallback_locale`` option is accepted and has no effect: English is always the fallback.
    """

    def __init__(self, opts: dict | None = None) -> None:
        super().__init__((opts or {}).get("locale"))


__all__ = ["EasyLocale"]
