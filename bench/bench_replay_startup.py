"""Start-up of a replaying test run: seconds from process start to the first replayed token.

Runs a plain ``pytest`` over a copy of examples/chat_app (replay from its committed cassettes, no
model) in a fresh interpreter, ``--rounds`` times, and prints the median time from just before the
process is started to the first token a MockTokenSampler returned, plus whether the run imported
transformers or the recorder (it should import neither).

    python bench/bench_replay_startup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "chat_app"


def run_once(example: Path, out: Path) -> dict:
    """One plain pytest run of ``example``; its probe's JSON plus ``seconds`` to the first replayed token."""
    # A fresh run as a user starts it: nothing inherited from a pytest (or an xdist worker) that runs this.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "XDIST_"))}
    env = {**inherited, "STARTUP_PROBE_OUT": str(out),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "_startup_probe", str(example)],
                          cwd=example, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"pytest failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    data = json.loads(out.read_text())
    data["seconds"] = data["first_token_at"] - start
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        example = Path(tmp) / "chat_app"
        shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("__pycache__"))
        runs = [run_once(example, Path(tmp) / f"probe-{i}.json") for i in range(args.rounds)]
    seconds = [r["seconds"] for r in runs]
    print(f"rounds={args.rounds} imported={runs[0]['imported']}")
    median = statistics.median(seconds)
    print(f"process start -> first replayed token: {median:.2f} s (median; min {min(seconds):.2f} s)")


if __name__ == "__main__":
    main()
