"""A plain ``pytest`` of a downstream app that replays cassettes imports neither transformers nor the recorder.

examples/chat_app is copied away and run in a fresh interpreter with bench/_startup_probe.py as a
plugin, which notes the first replayed token and, at the end, which heavy modules were imported.
bench/bench_replay_startup.py times the same run.
"""

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_replay_startup import run_once  # noqa: E402


def test_replaying_an_app_imports_neither_transformers_nor_the_recorder(tmp_path):
    example = tmp_path / "chat_app"
    shutil.copytree(ROOT / "examples" / "chat_app", example, ignore=shutil.ignore_patterns("__pycache__"))
    data = run_once(example, tmp_path / "probe.json")
    assert data["first_token_at"] is not None and data["seconds"] > 0  # it did replay tokens
    assert data["imported"] == {"transformers": False, "chatstream.cassettes.recording": False,
                                "chatstream.cassettes.probe": False,
                                "chatstream.cassettes._cassette_manifest": False}, json.dumps(data)
