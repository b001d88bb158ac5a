"""``chatstream.sampling``, documented, kept: the same module object as ``chatstream.engine.sampling``."""

import sys

from .engine import sampling as _module

sys.modules[__name__] = _module
