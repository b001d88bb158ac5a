#!/usr/bin/env bash
# Installs everything ChatStream's development needs, on a fresh machine or an existing one, into the
# `python` on PATH (a venv if one is active).
# - torch: kept if already installed (bring your own CUDA build); otherwise torch==2.13.0, which on the
#   project's CPU machines resolves to the local CPU wheel.
# - the package, editable, with its dev extras (pytest, pytest-asyncio, xdist, ruff, playwright) and the real-model
#   extra (gguf, for tools/real_model.py), at the exact
#   releases in constraints.txt, which CI tested (made by `bash tools/lock.sh`). With a torch other than
#   2.13.0, torch's own requirements are left to it; on a Python other than the lock's, the newest releases
#   pyproject.toml allows are installed instead, with a warning.
# - Debian's chromium for the browser test and redis-server for the session-store tests, when apt-get is there
#   and they are not.
# - with --ray: also chatstream[ray] (Ray Serve, for the tests marked `ray`; CI's locked leg passes it).
set -euo pipefail
EXTRAS="dev,real-model"
for arg in "$@"; do
  case "$arg" in
    --ray) EXTRAS="dev,real-model,ray" ;;
    *) echo "usage: bash tools/setup.sh [--ray]" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
TORCH=2.13.0
CONSTRAINTS=constraints.txt
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

lock_python="$(sed -n 's/^# python: \([0-9.]*\),.*/\1/p' "$CONSTRAINTS")"
this_python="$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$lock_python" != "$this_python" ]; then
  echo "WARNING: $CONSTRAINTS was made on Python $lock_python, this is Python $this_python: installing the" \
       "newest releases pyproject.toml allows instead of the tested ones." >&2
  : > "$WORK/constraints.txt"
  CONSTRAINTS="$WORK/constraints.txt"
fi

if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -c "$CONSTRAINTS" "torch==$TORCH"
elif [ "$(python -c 'import torch; print(torch.__version__.split("+")[0])')" != "$TORCH" ]; then
  # Someone else's torch: its own requirements (sympy, networkx, ...) may pin other releases than the lock.
  python - "$CONSTRAINTS" > "$WORK/constraints-without-torch.txt" <<'EOF'
import re
import sys
from importlib.metadata import requires

def name(requirement):
    return re.split(r"[\s;<>=!~\[(@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")

torch_needs = {name(r) for r in requires("torch") or [] if "extra ==" not in r}
sys.stdout.writelines(line for line in open(sys.argv[1]) if name(line) not in torch_needs)
EOF
  CONSTRAINTS="$WORK/constraints-without-torch.txt"
fi
python -m pip install -c "$CONSTRAINTS" -e ".[$EXTRAS]"
if command -v pyenv >/dev/null 2>&1; then
  pyenv rehash  # a pyenv python: make its new commands (pytest, chatstream) callable at once
fi
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
if [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  # shellcheck disable=SC2086 # one word per package
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $missing >/dev/null
fi
echo "chatstream set up: $(python -c 'import chatstream, torch; print(chatstream.__version__, "torch", torch.__version__)')"
