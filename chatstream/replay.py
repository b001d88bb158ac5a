"""``chatstream.replay``, documented, kept: the same module object as ``chatstream.cassettes.replay``."""

import sys

from .cassettes import replay as _module

sys.modules[__name__] = _module
