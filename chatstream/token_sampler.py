"""``chatstream.token_sampler``, documented, kept: the same module object as ``chatstream.engine.token_sampler``."""

import sys

from .engine import token_sampler as _module

sys.modules[__name__] = _module
