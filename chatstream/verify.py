"""``chatstream.verify``, documented, kept: the same module object as ``chatstream.cassettes.verify``."""

import sys

from .cassettes import verify as _module

sys.modules[__name__] = _module
