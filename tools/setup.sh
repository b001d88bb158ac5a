#!/usr/bin/env bash
# Installs everything ChatStream's development needs, on a fresh machine or an existing one.
# - torch: kept if already installed (bring your own CUDA build); otherwise torch==2.13.0, which on the
#   project's CPU machines resolves to the local CPU wheel.
# - the package, editable, with its dev extras (pytest, pytest-asyncio, xdist, ruff, playwright).
# - Debian's chromium for the browser test, when apt-get is there and chromium is not.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install "torch==2.13.0"
fi
python -m pip install -e ".[dev]"
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
echo "chatstream set up: $(python -c 'import chatstream, torch; print(chatstream.__version__, "torch", torch.__version__)')"
