"""``chatstream.mock_generator``, documented, kept: the same module object as ``chatstream.engine.mock_generator``."""

import sys

from .engine import mock_generator as _module

sys.modules[__name__] = _module
