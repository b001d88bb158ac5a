"""``chatstream.detokenizer``, documented, kept: the same module object as ``chatstream.engine.detokenizer``."""

import sys

from .engine import detokenizer as _module

sys.modules[__name__] = _module
