"""``chatstream.chat_prompt``, a 0.3 path, kept: the same module object as ``chatstream.engine.chat_prompt``."""

import sys

from .engine import chat_prompt as _module

sys.modules[__name__] = _module
