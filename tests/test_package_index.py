"""tests/_package_index.py: whether pip can fetch the build backend, so the wheel test skips offline."""

from __future__ import annotations

import os
from pathlib import Path

from _package_index import build_backend_unavailable, build_requirements

ROOT = Path(__file__).resolve().parent.parent


def test_the_build_requirements_are_read_from_pyproject() -> None:
    assert any(requirement.startswith("setuptools") for requirement in build_requirements(ROOT))


def test_an_unreachable_index_is_a_reason_naming_what_could_not_be_fetched(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL="http://127.0.0.1:9/simple/", PIP_RETRIES="0",
               PIP_TIMEOUT="2", PIP_NO_CACHE_DIR="1")
    reason = build_backend_unavailable(ROOT, env=env)
    assert reason is not None and reason.startswith("pip could not fetch setuptools")
