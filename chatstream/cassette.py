"""``chatstream.cassette``, documented, kept: the same module object as ``chatstream.cassettes.cassette``."""

import sys

from .cassettes import cassette as _module

sys.modules[__name__] = _module
