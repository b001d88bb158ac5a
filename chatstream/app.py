"""``chatstream.app``, documented, kept: the same module object as ``chatstream.serving.app``."""

import sys

from .serving import app as _module

sys.modules[__name__] = _module
