"""Whether pip can fetch the build backend here, asked of pip itself (its index, extra indexes, find-links).

tests/test_wheel.py builds the wheel with pip in an isolated build environment, which installs
``[build-system] requires`` from those sources; offline, it skips with the reason pip gives.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tempfile
from pathlib import Path

TIMEOUT_S = 120


def build_requirements(root: Path) -> list[str]:
    """``[build-system] requires`` of the project at ``root``."""
    # Not tomllib: Python 3.10, which the project supports, has none. The list is one line of strings.
    section = (root / "pyproject.toml").read_text().split("[build-system]", 1)[1].split("\n[", 1)[0]
    found = re.search(r"^requires\s*=\s*(\[.*\])\s*$", section, re.MULTILINE)
    if found is None:
        raise ValueError(f"{root / 'pyproject.toml'}: no one-line [build-system] requires list")
    return ast.literal_eval(found.group(1))


def build_backend_unavailable(root: Path, env: dict[str, str] | None = None) -> str | None:
    """Why pip cannot fetch the build backend of ``root`` (pip's last error line), or None when it can."""
    requires = build_requirements(root)
    with tempfile.TemporaryDirectory() as dest:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", dest, *requires],
                capture_output=True, text=True, timeout=TIMEOUT_S, env=env,
            )
        except subprocess.TimeoutExpired:
            return f"pip could not fetch {' '.join(requires)} within {TIMEOUT_S} s"
    if done.returncode == 0:
        return None
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    return f"pip could not fetch {' '.join(requires)}: {errors[-1] if errors else f'exit {done.returncode}'}"
