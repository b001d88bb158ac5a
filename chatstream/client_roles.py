"""``chatstream.client_roles``, documented, kept: the same module object as ``chatstream.serving.client_roles``."""

import sys

from .serving import client_roles as _module

sys.modules[__name__] = _module
