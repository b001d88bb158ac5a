"""A pytest plugin (``-p _startup_probe``) that notes when the first replayed token was returned and,
at the end, which heavy modules the run imported; it writes both as JSON to ``$STARTUP_PROBE_OUT``.

Used by bench/bench_replay_startup.py (the figure) and tests/test_replay_startup.py (the imports).
"""

from __future__ import annotations

import json
import os
import sys
import time

_first_token: list[float] = []
WATCHED = ("transformers", "chatstream.cassettes.recording", "chatstream.cassettes.probe",
           "chatstream.cassettes._cassette_manifest")


def pytest_configure(config) -> None:
    from chatstream.cassettes.replay import MockTokenSampler

    sample = MockTokenSampler.sample

    def timed(self, *args, **kwargs):
        token = sample(self, *args, **kwargs)
        if not _first_token:
            _first_token.append(time.time())
        return token

    MockTokenSampler.sample = timed


def pytest_sessionfinish(session, exitstatus) -> None:
    out = os.environ["STARTUP_PROBE_OUT"]
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"first_token_at": _first_token[0] if _first_token else None,
                   "imported": {name: name in sys.modules for name in WATCHED}}, f)
