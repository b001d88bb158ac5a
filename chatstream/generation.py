"""``chatstream.generation``, documented, kept: the same module object as ``chatstream.engine.generation``."""

import sys

from .engine import generation as _module

sys.modules[__name__] = _module
