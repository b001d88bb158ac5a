#!/usr/bin/env bash
# Writes constraints.txt, the exact releases that `bash tools/setup.sh` installs and CI tests: in a fresh
# venv, torch==2.13.0 (the local CPU wheel) and then chatstream[dev,real-model,ray] resolved to the newest releases that
# pyproject.toml allows; then `pip freeze --all`, without chatstream itself, pip, and torch (setup.sh keeps
# a torch that is already installed). Never edit constraints.txt by hand: run
#
#     bash tools/lock.sh [REQUIREMENT ...]
#
# REQUIREMENTs hold releases back for this lock (e.g. 'transformers<5.24' while a new release breaks
# something); they are written into the file's first line, so the next lock repeats or drops them on purpose.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=2.13.0
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

python -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
echo "torch==$TORCH" > "$WORK/torch.txt"
"$PY" -m pip install -q "torch==$TORCH"
"$PY" -m pip install -q -c "$WORK/torch.txt" -e ".[dev,real-model,ray]" "$@"
"$PY" -m pip check
{
  echo "# Made by: bash tools/lock.sh${*:+ $*}"
  echo "# Never edit by hand; see tools/lock.sh. Installed by tools/setup.sh with pip's -c (constraints)."
  echo "# python: $("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])'), $(uname -sm); torch: $TORCH, not pinned here"
  "$PY" -m pip freeze --all --exclude-editable | grep -v -i -E '^(torch|pip)(==| @)'
} > constraints.txt
echo "wrote constraints.txt: $(grep -c -v '^#' constraints.txt) pinned releases"
