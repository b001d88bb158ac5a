"""``chatstream.cli`` (the console script ``chatstream = "chatstream.cli:main"``) is ``chatstream.serving.cli``."""

import sys

from .serving import cli as _module

main = _module.main

if __name__ == "__main__":
    raise SystemExit(main())
sys.modules[__name__] = _module
