"""``chatstream.fingerprint``, documented, kept: the same module object as ``chatstream.cassettes.fingerprint``."""

import sys

from .cassettes import fingerprint as _module

sys.modules[__name__] = _module
