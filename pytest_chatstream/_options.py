"""The plugin's command-line options, ini options and marker (their help texts), and reading them into the
arguments of :func:`_settings.resolve_settings`. The mode (``--probe``) is read by the plugin itself: a bare
``--probe`` may have taken a test path for its mode."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._paths import MARKER
from ._settings import FIDELITIES, MODEL_ENV

GROUP = ("chatstream", "ChatStream cassettes (replayed by default; recorded with --probe)")

OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--probe", {
        "action": "store", "nargs": "?", "const": "all", "default": None, "metavar": "MODE",
        "help": "run the live model: 'all' (the default of a bare --probe) re-records every cassette, "
                "'missing' records absent ones, 'verify' compares with the cassettes and writes nothing, "
                "'repeat:N' runs each test N times live (writes nothing) and counts its distinct token sequences. "
                "A test path right after a bare --probe is recorded (--probe tests/test_x.py = --probe=all "
                "tests/test_x.py).",
    }),
    ("--probe-model", {
        "default": None, "metavar": "PATH",
        "help": f"local HF model directory, or a Hub id (org/name) in the local HF cache, to record "
                f"from; write --probe-model=PATH for a model outside the project (env: {MODEL_ENV}; "
                "ini: chatstream_model_path).",
    }),
    ("--probe-device", {
        "default": None, "metavar": "DEVICE",
        "help": "device of the live model (ini: chatstream_device; default cuda when available, else cpu).",
    }),
    ("--probe-fidelity", {
        "default": None, "choices": FIDELITIES,
        "help": "logits kept by recording (ini: chatstream_fidelity; default compact).",
    }),
    ("--probe-report", {
        "default": None, "metavar": "PATH",
        "help": "JSON report of --probe=verify or --probe=repeat:N (ini: chatstream_verify_report, "
                "chatstream_repeat_report).",
    }),
    ("--probe-repeat-max-distinct", {
        "default": None, "type": int, "metavar": "K",
        "help": "under --probe=repeat:N, fail a test whose runs produced more than K distinct token "
                "sequences (ini: chatstream_repeat_max_distinct; default: no limit).",
    }),
    ("--chatstream-unused", {
        "action": "store_true", "default": False,
        "help": "list the cassettes on disk that no test of this run used.",
    }),
)

INI_OPTIONS: tuple[tuple[str, str], ...] = (
    ("chatstream_cassette_dir", "cassette directory (default fixtures/cassettes under the rootdir)"),
    ("chatstream_model_path", "local HF model directory (or cached Hub id) that --probe records from"),
    ("chatstream_device", "device of the live model under --probe (default cuda when available)"),
    ("chatstream_fidelity", "fidelity of recorded logits: compact (default), fp16 or exact"),
    ("chatstream_missing_cassette", "a test without its cassette: fail (default) or skip"),
    ("chatstream_verify_report", "JSON report path of --probe=verify "
                                 "(default chatstream-verify-report.json under the rootdir)"),
    ("chatstream_repeat_report", "JSON report path of --probe=repeat:N "
                                 "(default chatstream-repeat-report.json under the rootdir)"),
    ("chatstream_repeat_max_distinct", "under --probe=repeat:N, the most distinct token sequences a "
                                       "test's runs may produce (default: no limit)"),
)

MARKER_HELP = (
    f"{MARKER}(name=None, *, fidelity=None): use the named cassette <cassette_dir>/<name> (several "
    "tests may share one; the first to run records it under --probe) and/or record it at a fidelity."
)


def settings_arguments(option: Callable[[str], Any], ini: Callable[[str], Any],
                       environ: Mapping[str, str]) -> dict[str, Any]:
    """``resolve_settings``' arguments from the command line (``option``: pytest's ``getoption``), the ini file
    (``ini``: ``getini``; an empty value is unset) and the environment; all but the mode and the directories."""
    return {
        "cli_model": option("--probe-model"),
        "env_model": environ.get(MODEL_ENV) or None,
        "cli_device": option("--probe-device"),
        "cli_fidelity": option("--probe-fidelity"),
        "cli_report": option("--probe-report"),
        "list_unused": option("--chatstream-unused"),
        "ini_cassette_dir": ini("chatstream_cassette_dir") or None,
        "ini_model": ini("chatstream_model_path") or None,
        "ini_device": ini("chatstream_device") or None,
        "ini_fidelity": ini("chatstream_fidelity") or None,
        "ini_missing": ini("chatstream_missing_cassette") or None,
        "ini_report": ini("chatstream_verify_report") or None,
        "cli_max_distinct": option("--probe-repeat-max-distinct"),
        "ini_max_distinct": ini("chatstream_repeat_max_distinct") or None,
        "ini_repeat_report": ini("chatstream_repeat_report") or None,
    }
