"""The plugin's settings for one run, and what each test does with its cassette.

Precedence, for every setting that several places can give: command line > ini option (or the
``chatstream_config`` fixture) > marker > default. The mode is the exception: only the command line
sets it, so no ini option, fixture or marker can turn a plain ``pytest`` run into one that loads a
model or writes a cassette.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chatstream.cassettes._cassette_places import DEFAULT_FIDELITY, FIDELITIES

from ._errors import configuration_error
from ._paths import resolve_dir

DEFAULT_CASSETTE_DIR = "fixtures/cassettes"
DEFAULT_VERIFY_REPORT = "chatstream-verify-report.json"
DEFAULT_REPEAT_REPORT = "chatstream-repeat-report.json"
MISSING_ACTIONS = ("fail", "skip")
MODEL_ENV = "CHATSTREAM_MODEL_PATH"


class Mode(str, enum.Enum):
    """What a run does with cassettes: ``replay`` (plain pytest) or one of the ``--probe`` modes."""

    REPLAY = "replay"
    ALL = "all"
    MISSING = "missing"
    VERIFY = "verify"
    REPEAT = "repeat"  # --probe=repeat:N, each test run N times live: how many distinct token sequences

    @property
    def label(self) -> str:
        return "replay" if self is Mode.REPLAY else f"probe={self.value}"


class Action(str, enum.Enum):
    """What one test does: replay its cassette, record it, run live and compare, or miss it."""

    REPLAY = "replay"
    RECORD = "record"
    VERIFY = "verify"
    MISSING = "missing"
    REPEAT = "repeat"


PROBE_CHOICES = (Mode.ALL.value, Mode.MISSING.value, Mode.VERIFY.value)


def is_probe_mode(value: str) -> bool:
    """Whether ``value`` (given to ``--probe``) is meant as a mode, valid or not, rather than a test path."""
    return value in PROBE_CHOICES or value == Mode.REPEAT.value or value.startswith(f"{Mode.REPEAT.value}:")


def parse_probe(value: str | None) -> tuple[Mode, int]:
    """The mode from ``--probe`` (None when not given: replay; ``--probe`` alone is ``all``) and, for
    ``repeat:N``, N (else 0)."""
    if value is None:
        return Mode.REPLAY, 0
    if value in PROBE_CHOICES:
        return Mode(value), 0
    head, _, count = value.partition(":")
    if head == Mode.REPEAT.value:
        if not count.isdigit() or int(count) < 2:
            raise configuration_error(
                f"--probe={value!r}: repeat needs how many times to run each test, at least 2, "
                "e.g. --probe=repeat:10."
            )
        return Mode.REPEAT, int(count)
    raise configuration_error(
        f"--probe={value!r} is not a probe mode; use --probe (same as --probe=all), "
        "--probe=missing, --probe=verify or --probe=repeat:N."
    )


def probe_on_command_line(args: Sequence[str]) -> bool:
    """Whether ``args`` pass ``--probe`` themselves (pytest's parser allows no abbreviation of it)."""
    return any(arg == "--probe" or arg.startswith("--probe=") for arg in args)


def addopts_probe_message(probe: str) -> str:
    """A usage error's text for a probe mode that came from the ini option ``addopts``: pytest would take it as
    if it had been typed, which would let a committed file make CI load a model and record."""
    return (
        f"--probe={probe} came from the ini option addopts; only the command line (or PYTEST_ADDOPTS) "
        "may choose a probe mode. Remove --probe from addopts and pass it to pytest when you record."
    )


NO_MODEL_MESSAGE = (
    "--probe needs a model to record from; pass --probe-model=PATH, set {env}, or set the ini option "
    "chatstream_model_path to a local HF model directory, a Hub id in the local HF cache, or `bundled` "
    "(the tiny model that ships with chatstream); or override the chatstream_live_model fixture."
)


def missing_model_message(settings: Settings, tests_needing_it: Sequence[str]) -> str | None:
    """A usage error's text when this run goes live for ``tests_needing_it`` (tests whose default
    ``chatstream_live_model`` would load the configured model) but no model is configured; else None."""
    if not settings.live or settings.model_spec or not tests_needing_it:
        return None
    more = len(tests_needing_it) - 3
    shown = ", ".join(tests_needing_it[:3]) + (f" and {more} more" if more > 0 else "")
    return NO_MODEL_MESSAGE.format(env=MODEL_ENV) + f" Tests that would load it: {shown}."


def decide_action(mode: Mode, cassette_exists: bool) -> Action:
    """What a test does with its cassette under ``mode``."""
    if mode is Mode.ALL:
        return Action.RECORD
    if mode is Mode.MISSING:
        return Action.REPLAY if cassette_exists else Action.RECORD
    if mode is Mode.VERIFY:
        return Action.VERIFY if cassette_exists else Action.MISSING
    if mode is Mode.REPEAT:
        return Action.REPEAT  # runs live and writes nothing, cassette or not
    return Action.REPLAY if cassette_exists else Action.MISSING


@dataclass(frozen=True)
class Settings:
    """Everything the plugin needs to know about this run, resolved once at configure time."""

    mode: Mode
    cassette_dir: Path
    model_path: Path | None  # the model's local directory, when the setting names one that exists
    device: str | None
    fidelity: str | None  # None: the marker's, else DEFAULT_FIDELITY
    missing: str
    verify_report: Path
    list_unused: bool
    model_spec: str | None = None  # the model setting as written: a directory or a Hub id (org/name)
    model_origin: str = ""  # where it was written: --probe-model, CHATSTREAM_MODEL_PATH or chatstream_model_path
    model_base: Path | None = None  # the directory a relative model_spec is taken from
    repeat: int = 0  # N of --probe=repeat:N
    repeat_max_distinct: int | None = None  # more distinct token sequences than this fails the test
    repeat_report: Path | None = None  # JSON report of --probe=repeat:N

    @property
    def report_path(self) -> Path | None:
        """Where this run's JSON report goes: verify's or repeat's (None in other modes)."""
        return {Mode.VERIFY: self.verify_report, Mode.REPEAT: self.repeat_report}.get(self.mode)

    @property
    def live(self) -> bool:
        """Whether this run may load the live model (only a --probe run)."""
        return self.mode is not Mode.REPLAY

    def fidelity_for(self, marker_fidelity: str | None) -> str:
        # Precedence: command line / ini (already merged into self.fidelity) > marker > default.
        fidelity = self.fidelity or marker_fidelity or DEFAULT_FIDELITY
        _check_choice("fidelity", fidelity, FIDELITIES)
        return fidelity


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise configuration_error(f"`{name}` (={value!r}) must be one of {', '.join(choices)}.")


def resolve_settings(
    *,
    probe: str | None,
    cli_model: str | None,
    env_model: str | None = None,
    cli_device: str | None,
    cli_fidelity: str | None,
    cli_report: str | None,
    list_unused: bool,
    ini_cassette_dir: str | None,
    ini_model: str | None,
    ini_device: str | None,
    ini_fidelity: str | None,
    ini_missing: str | None,
    ini_report: str | None,
    invocation_dir: Path,
    rootpath: Path,
    cli_max_distinct: int | None = None,
    ini_max_distinct: str | None = None,
    ini_repeat_report: str | None = None,
) -> Settings:
    """Merge command line, environment and ini values; command-line and environment paths are relative
    to the invocation directory, ini paths to the rootdir."""
    # Precedence: command line > environment (CHATSTREAM_MODEL_PATH) > ini > default.
    if cli_model:
        model_spec, model_origin, model_base = cli_model, "--probe-model", invocation_dir
    elif env_model:
        model_spec, model_origin, model_base = env_model, MODEL_ENV, invocation_dir
    elif ini_model:
        model_spec, model_origin, model_base = ini_model, "chatstream_model_path", rootpath
    else:
        model_spec, model_origin, model_base = None, "", None
    model_path = resolve_dir(model_spec, model_base) if model_spec and model_base else None
    if model_path is not None and not model_path.is_dir():
        model_path = None  # a Hub id, or absent (CI): the plugin resolves or refuses it
    fidelity = cli_fidelity or ini_fidelity or None
    if fidelity is not None:
        _check_choice("chatstream_fidelity", fidelity, FIDELITIES)
    missing = ini_missing or "fail"
    _check_choice("chatstream_missing_cassette", missing, MISSING_ACTIONS)
    report = (
        resolve_dir(cli_report, invocation_dir) if cli_report
        else resolve_dir(ini_report or DEFAULT_VERIFY_REPORT, rootpath)
    )
    mode, repeat = parse_probe(probe)  # only the command line chooses the mode
    repeat_report = (
        resolve_dir(cli_report, invocation_dir) if cli_report
        else resolve_dir(ini_repeat_report or DEFAULT_REPEAT_REPORT, rootpath)
    )
    return Settings(
        mode=mode,
        cassette_dir=resolve_dir(ini_cassette_dir or DEFAULT_CASSETTE_DIR, rootpath),
        model_path=model_path,
        device=cli_device or ini_device or None,
        fidelity=fidelity,
        missing=missing,
        verify_report=report,
        list_unused=list_unused,
        model_spec=model_spec,
        model_origin=model_origin,
        model_base=model_base,
        repeat=repeat,
        repeat_max_distinct=_max_distinct(cli_max_distinct, ini_max_distinct),
        repeat_report=repeat_report,
    )


def _max_distinct(cli_value: int | None, ini_value: str | None) -> int | None:
    # Precedence: command line > ini > none (no limit).
    if cli_value is not None:
        value, name = cli_value, "--probe-repeat-max-distinct"
    elif ini_value:
        name = "chatstream_repeat_max_distinct"
        if not ini_value.strip().isdigit():
            raise configuration_error(f"`{name}` (={ini_value!r}) must be a whole number of token sequences, >= 1.")
        value = int(ini_value)
    else:
        return None
    if value < 1:
        raise configuration_error(f"`{name}` (={value!r}) must be >= 1: one token sequence means every run agreed.")
    return value
