"""``chatstream.batched_generator``, documented, kept: the module ``chatstream.engine.batched_generator``."""

import sys

from .engine import batched_generator as _module

sys.modules[__name__] = _module
