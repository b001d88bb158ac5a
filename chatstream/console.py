"""``chatstream.console`` (``python -m chatstream.console``, a documented path) is ``chatstream.serving.console``."""

import sys

from .serving import console as _module

if __name__ == "__main__":
    raise SystemExit(_module.main())
sys.modules[__name__] = _module
