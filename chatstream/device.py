"""``chatstream.device``, documented, kept: the same module object as ``chatstream.engine.device``."""

import sys

from .engine import device as _module

sys.modules[__name__] = _module
