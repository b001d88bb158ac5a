"""``chatstream.probe``, documented, kept: the same module object as ``chatstream.cassettes.probe``."""

import sys

from .cassettes import probe as _module

sys.modules[__name__] = _module
