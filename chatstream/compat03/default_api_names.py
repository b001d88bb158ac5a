"""The ChatStream 0.3 module path of ``DefaultApiNames`` (see chatstream.serving.api).

0.3's class also carried ``API_NAMES`` (a list) and ``API_METHODS`` (name -> HTTP method); they are
kept on it here, built from ``chatstream.serving.api``'s one table.
"""

from typing import ClassVar

from ..serving.api import API_METHODS, API_NAMES
from ..serving.api import DefaultApiNames as _DefaultApiNames


class DefaultApiNames(_DefaultApiNames):
    """``chatstream.serving.api.DefaultApiNames`` with 0.3's ``API_NAMES`` and ``API_METHODS``."""

    API_NAMES: ClassVar[list[str]] = list(API_NAMES)
    API_METHODS: ClassVar[dict[str, str]] = dict(API_METHODS)


__all__ = ["DefaultApiNames"]
