"""The ChatStream 0.3 module path of ``DefaultApiNames`` (see chatstream.api).

0.3's class also carried ``API_NAMES`` (a list) and ``API_METHODS`` (name -> HTTP method); they are
kept on it here, built from ``chatstream.api``'s one table.
"""

from typing import ClassVar

from .api import API_METHODS, API_NAMES
from .api import DefaultApiNames as _DefaultApiNames


class DefaultApiNames(_DefaultApiNames):
    """``chatstream.api.DefaultApiNames`` with 0.3's ``API_NAMES`` and ``API_METHODS``."""

    API_NAMES: ClassVar[list[str]] = list(API_NAMES)
    API_METHODS: ClassVar[dict[str, str]] = dict(API_METHODS)


__all__ = ["DefaultApiNames"]
