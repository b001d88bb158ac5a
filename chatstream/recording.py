"""``chatstream.recording``, documented, kept: the same module object as ``chatstream.cassettes.recording``."""

import sys

from .cassettes import recording as _module

sys.modules[__name__] = _module
