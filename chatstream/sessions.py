"""``chatstream.sessions``, documented, kept: the same module object as ``chatstream.serving.sessions``."""

import sys

from .serving import sessions as _module

sys.modules[__name__] = _module
