"""``chatstream.chat_stream``, documented, kept: the same module object as ``chatstream.serving.chat_stream``."""

import sys

from .serving import chat_stream as _module

sys.modules[__name__] = _module
