"""``chatstream.model_source``, documented, kept: the same module object as ``chatstream.engine.model_source``."""

import sys

from .engine import model_source as _module

sys.modules[__name__] = _module
