"""The pytest surface of pytest_chatstream: options, ini options, marker, fixtures and hooks.

Plain ``pytest`` replays each test's cassette; ``pytest --probe`` records them with the live model,
``--probe=missing`` records only the absent ones and ``--probe=verify`` compares the live model with
them. Everything that does not need pytest lives in the ``_``-modules beside this one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shlex
import time
import types
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from ._cmdline import is_test_path, model_path_misread, probe_path_message
from ._errors import cassette_not_found, configuration_error, is_configuration_error
from ._misses import MissLog
from ._model import locate_model
from ._paths import default_cassette_relpath, named_cassette_relpath, relpath_or_abs
from ._recording import PendingRecording, plan_cassette, settle_recording
from ._repeat import add_run
from ._report import Report, cassettes_on_disk, rename_hint
from ._session import (
    CassetteRun,
    missing_message,
    replay_transformer,
)
from ._settings import (
    FIDELITIES,
    MODEL_ENV,
    NO_MODEL_MESSAGE,
    Action,
    Mode,
    Settings,
    decide_action,
    is_probe_mode,
    missing_model_message,
    probe_on_command_line,
    resolve_settings,
)
from ._staging import ClaimBoard
from ._stale import StaleCheck
from ._verify import diverged_message, error_verdict, format_error, verdict_for

MARKER = "chatstream_cassette"
USES_CASSETTE = "mock_transformer"  # every cassette-backed fixture depends on this one

SETTINGS = pytest.StashKey[Settings]()
REPORT = pytest.StashKey[Report]()
RUN_ID = pytest.StashKey[str]()
STALE = pytest.StashKey[StaleCheck]()
ITEM_CASSETTE = pytest.StashKey[str]()
ITEM_RUN = pytest.StashKey[CassetteRun]()
ITEM_PASSED = pytest.StashKey[bool]()
ITEM_PROBLEM = pytest.StashKey[str]()
ITEM_MISSES = pytest.StashKey[MissLog]()
ITEM_PENDING = pytest.StashKey[PendingRecording]()
ITEM_RECORDED_BY = pytest.StashKey[str]()
ITEM_REPEATS = pytest.StashKey[list]()
SELECTED_USERS = pytest.StashKey[dict]()


# -- options --------------------------------------------------------------------------------------------


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chatstream", "ChatStream cassettes (replayed by default; recorded with --probe)")
    group.addoption(
        "--probe", action="store", nargs="?", const="all", default=None, metavar="MODE",
        help="run the live model: 'all' (the default of a bare --probe) re-records every cassette, "
             "'missing' records absent ones, 'verify' compares with the cassettes and writes nothing, "
             "'repeat:N' runs each test N times live (writes nothing) and counts its distinct token sequences. "
             "A test path right after a bare --probe is recorded (--probe tests/test_x.py = --probe=all "
             "tests/test_x.py).",
    )
    group.addoption("--probe-model", default=None, metavar="PATH",
                    help=f"local HF model directory, or a Hub id (org/name) in the local HF cache, to record "
                         f"from; write --probe-model=PATH for a model outside the project (env: {MODEL_ENV}; "
                         "ini: chatstream_model_path).")
    group.addoption("--probe-device", default=None, metavar="DEVICE",
                    help="device of the live model (ini: chatstream_device; default cuda when available, else cpu).")
    group.addoption("--probe-fidelity", default=None, choices=FIDELITIES,
                    help="logits kept by recording (ini: chatstream_fidelity; default compact).")
    group.addoption("--probe-report", default=None, metavar="PATH",
                    help="JSON report of --probe=verify or --probe=repeat:N (ini: chatstream_verify_report, "
                         "chatstream_repeat_report).")
    group.addoption("--probe-repeat-max-distinct", default=None, type=int, metavar="K",
                    help="under --probe=repeat:N, fail a test whose runs produced more than K distinct token "
                         "sequences (ini: chatstream_repeat_max_distinct; default: no limit).")
    group.addoption("--chatstream-unused", action="store_true", default=False,
                    help="list the cassettes on disk that no test of this run used.")
    parser.addini("chatstream_cassette_dir", "cassette directory (default fixtures/cassettes under the rootdir)")
    parser.addini("chatstream_model_path", "local HF model directory (or cached Hub id) that --probe records from")
    parser.addini("chatstream_device", "device of the live model under --probe (default cuda when available)")
    parser.addini("chatstream_fidelity", "fidelity of recorded logits: compact (default), fp16 or exact")
    parser.addini("chatstream_missing_cassette", "a test without its cassette: fail (default) or skip")
    parser.addini("chatstream_verify_report", "JSON report path of --probe=verify "
                                              "(default chatstream-verify-report.json under the rootdir)")
    parser.addini("chatstream_repeat_report", "JSON report path of --probe=repeat:N "
                                              "(default chatstream-repeat-report.json under the rootdir)")
    parser.addini("chatstream_repeat_max_distinct", "under --probe=repeat:N, the most distinct token sequences a "
                                                    "test's runs may produce (default: no limit)")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Refuse a misread ``--probe-model PATH`` before any conftest is imported: the wrong rootdir drops
    the ini file, and with it the ``pythonpath`` a conftest may need to import the app."""
    command_line = [*shlex.split(os.environ.get("PYTEST_ADDOPTS", "")), *early_config.invocation_params.args]
    test_args = list(getattr(early_config.known_args_namespace, "file_or_dir", None) or [])
    _refuse_a_misread_model_path(early_config, command_line, test_args)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(name=None, *, fidelity=None): use the named cassette <cassette_dir>/<name> (several "
        "tests may share one; the first to run records it under --probe) and/or record it at a fidelity.",
    )
    probe = config.getoption("--probe")
    workerinput = getattr(config, "workerinput", None)
    if probe is not None and not is_probe_mode(probe):
        probe = _probe_value_as_test_path(config, probe)
    # The mode comes from the command line only: pytest would take an ini file's `addopts = --probe`
    # as if it had been typed, which would let a committed file make CI load a model and record.
    command_line = [*shlex.split(os.environ.get("PYTEST_ADDOPTS", "")), *config.invocation_params.args]
    if probe is not None and workerinput is None and not probe_on_command_line(command_line):
        raise pytest.UsageError(
            f"--probe={probe} came from the ini option addopts; only the command line (or PYTEST_ADDOPTS) "
            "may choose a probe mode. Remove --probe from addopts and pass it to pytest when you record."
        )
    if workerinput is None:
        _refuse_a_misread_model_path(config, command_line)
    try:
        settings = resolve_settings(
            probe=probe,
            cli_model=config.getoption("--probe-model"),
            env_model=os.environ.get(MODEL_ENV) or None,
            cli_device=config.getoption("--probe-device"),
            cli_fidelity=config.getoption("--probe-fidelity"),
            cli_report=config.getoption("--probe-report"),
            list_unused=config.getoption("--chatstream-unused"),
            ini_cassette_dir=config.getini("chatstream_cassette_dir") or None,
            ini_model=config.getini("chatstream_model_path") or None,
            ini_device=config.getini("chatstream_device") or None,
            ini_fidelity=config.getini("chatstream_fidelity") or None,
            ini_missing=config.getini("chatstream_missing_cassette") or None,
            ini_report=config.getini("chatstream_verify_report") or None,
            cli_max_distinct=config.getoption("--probe-repeat-max-distinct"),
            ini_max_distinct=config.getini("chatstream_repeat_max_distinct") or None,
            ini_repeat_report=config.getini("chatstream_repeat_report") or None,
            invocation_dir=config.invocation_params.dir,
            rootpath=config.rootpath,
        )
    except ValueError as error:  # a ConfigurationError names the bad option
        if not is_configuration_error(error):
            raise
        raise pytest.UsageError(str(error)) from None
    if settings.live and settings.model_spec and settings.model_base:
        # Checked once here, so a mistyped model stops the run instead of erroring in every test.
        try:
            model_dir = locate_model(settings.model_spec, settings.model_origin, settings.model_base)
        except ValueError as error:  # ConfigurationError: what is missing and how to get it
            if not is_configuration_error(error):
                raise
            raise pytest.UsageError(str(error)) from None
        settings = dataclasses.replace(settings, model_path=model_dir)
    config.stash[SETTINGS] = settings
    config.stash[REPORT] = Report(mode=settings.mode.value, repeats=settings.repeat,
                                  repeat_max_distinct=settings.repeat_max_distinct)
    if settings.mode is Mode.REPEAT:
        config.pluginmanager.register(RepeatRunner(settings.repeat), "chatstream-repeat")
    config.stash[STALE] = StaleCheck(settings)
    config.stash[RUN_ID] = workerinput["chatstream_run_id"] if workerinput else uuid.uuid4().hex


def _probe_value_as_test_path(config: pytest.Config, value: str) -> str:
    """``--probe tests/test_x.py``: argparse gave the test path to --probe as its mode; run it as meant."""
    if not is_test_path(value, config.invocation_params.dir):
        raise pytest.UsageError(probe_path_message(value))
    given = list(config.args) if config.args_source is pytest.Config.ArgsSource.ARGS else []
    config.args = [value, *given]
    config.args_source = pytest.Config.ArgsSource.ARGS
    config.option.file_or_dir = [value, *(config.option.file_or_dir or [])]
    config.option.probe = Mode.ALL.value
    return Mode.ALL.value


def _refuse_a_misread_model_path(config: pytest.Config, command_line: list[str],
                                 test_args: list[str] | None = None) -> None:
    if test_args is None:
        test_args = list(config.args) if config.args_source is pytest.Config.ArgsSource.ARGS else []
    problem = model_path_misread(
        command_line=command_line, test_args=test_args, rootpath=config.rootpath, inipath=config.inipath,
        inifile=getattr(config.option, "inifilename", None),
        override_ini=getattr(config.option, "override_ini", None),
        rootdir=getattr(config.option, "rootdir", None) or None, invocation_dir=config.invocation_params.dir,
    )
    if problem is not None:
        raise pytest.UsageError(problem)


# -- xdist: one claim board per run, worker reports merged on the controller ------------------------------


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    node.workerinput["chatstream_run_id"] = node.config.stash[RUN_ID]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    data = getattr(node, "workeroutput", {}).get("chatstream")
    if data:
        node.config.stash[REPORT].merge(Report.from_json(data))


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


# -- which cassette a test uses -------------------------------------------------------------------------


def cassette_relpath(item: pytest.Item) -> str:
    """The test's cassette, relative to the cassette directory: the marker's name, else its node id's.

    A project's ``pytest_chatstream_cassette_path`` hook may choose another path than the node id's;
    a marker's name wins over it. Raises ConfigurationError for a name that is not usable.
    """
    marker = item.get_closest_marker(MARKER)
    name = (marker.args[0] if marker.args else marker.kwargs.get("name")) if marker else None
    if name is not None:
        return named_cassette_relpath(name).as_posix()
    module, _, tail = item.nodeid.partition("::")
    default = default_cassette_relpath(module, tail).as_posix()
    chosen = item.config.hook.pytest_chatstream_cassette_path(item=item, default=default)
    return default if chosen is None else named_cassette_relpath(chosen).as_posix()


def _uses_cassette(item: pytest.Item) -> bool:
    return USES_CASSETTE in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselect: every collected test's cassette is expected
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Note every collected test's cassette; a test whose cassette is unusable errors at its setup."""
    report = config.stash[REPORT]
    owners: dict[str, pytest.Item] = {}
    modules: set[str] = set()
    for item in items:
        if not _uses_cassette(item):
            continue
        modules.add(default_cassette_relpath(item.nodeid.partition("::")[0], "").as_posix())
        try:
            rel = cassette_relpath(item)
        except ValueError as error:
            if not is_configuration_error(error):
                raise
            item.stash[ITEM_PROBLEM] = f"{item.nodeid}: {error}"
            continue
        owner = owners.setdefault(rel, item)
        if owner is not item and item.get_closest_marker(MARKER) is None:
            problem = (
                f"{owner.nodeid} and {item.nodeid} would share the cassette {rel} (their names differ "
                f"only in characters replaced in file names); give one of them "
                f"@pytest.mark.{MARKER}('a-name')."
            )
            item.stash[ITEM_PROBLEM] = owner.stash[ITEM_PROBLEM] = problem
    report.expected = sorted(set(report.expected) | set(owners))
    report.collected_modules = sorted(set(report.collected_modules) | modules)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The selected tests that use each named cassette, in run order ("": every selected test's id)."""
    users: dict[str, list[str]] = {"": []}
    for item in session.items:
        if not _uses_cassette(item) or ITEM_PROBLEM in item.stash:
            continue
        users[""].append(item.nodeid)
        if item.get_closest_marker(MARKER) is not None:
            with contextlib.suppress(ValueError):
                users.setdefault(cassette_relpath(item), []).append(item.nodeid)
    users[""] = set(users[""])
    session.config.stash[SELECTED_USERS] = users
    if not _is_worker(session.config):  # under xdist the controller collects nothing; workers error per test
        _refuse_a_live_run_without_model(session)


def _refuse_a_live_run_without_model(session: pytest.Session) -> None:
    """One usage error, before any test runs, when tests would load the live model and none is configured."""
    settings = session.config.stash[SETTINGS]
    if not settings.live or settings.model_spec:
        return
    needing = []
    for item in session.items:
        if not _uses_cassette(item) or ITEM_PROBLEM in item.stash:
            continue
        defs = session._fixturemanager.getfixturedefs("chatstream_live_model", item) or ()
        if not defs or getattr(defs[-1].func, "__module__", None) != __name__:
            continue  # the project overrides chatstream_live_model: it knows its model
        with contextlib.suppress(ValueError):
            exists = (settings.cassette_dir / cassette_relpath(item) / "manifest.json").is_file()
            if decide_action(settings.mode, exists) in (Action.RECORD, Action.VERIFY, Action.REPEAT):
                needing.append(item.nodeid)
    problem = missing_model_message(settings, needing)
    if problem is not None:
        raise pytest.UsageError(problem)


# -- outcome bookkeeping ---------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    started = time.perf_counter()
    if not _uses_cassette(item):
        return (yield)
    misses = item.stash[ITEM_MISSES] = MissLog()
    try:
        with misses:
            return (yield)
    finally:
        _settle_recording(item, None)  # a run stopped before the teardown report: keep the old cassette
        if ITEM_CASSETTE in item.stash:
            report = item.config.stash[REPORT]
            report.tests += 1
            report.seconds += time.perf_counter() - started


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    if report.when == "teardown":
        _settle_recording(item, report)
    if report.when == "call":
        item.stash[ITEM_PASSED] = report.passed
        misses = item.stash.get(ITEM_MISSES, None)
        raised = call.excinfo.value if call.excinfo is not None else None
        if report.failed and misses is not None and misses.errors and raised not in misses.errors:
            report.longrepr = miss_longrepr(misses.errors[0], report.longrepr, len(misses.errors))
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    run = item.stash.get(ITEM_RUN, None)
    if run is not None and run.action is Action.REPEAT:
        result = yield
        _measure_run(item, run)
        return result
    if run is None or run.action is not Action.VERIFY:
        return (yield)
    try:
        result = yield
    except BaseException:
        # The test failed already: still report how the model diverged, but never in place of its failure.
        try:
            _verify(item, run, fail=False)
        except Exception as error:
            _verify_error(item, error)
            item.add_report_section("call", "chatstream verify", "comparing the live run with the cassette "
                                    "failed too (the test's own failure is above):\n" + format_error(error))
        raise
    try:
        _verify(item, run, fail=True)
    except Exception as error:  # not pytest.fail's exception (a BaseException): a diverged verdict is noted
        _verify_error(item, error)
        raise
    return result


def _measure_run(item: pytest.Item, run: CassetteRun) -> None:
    """Keep what this run of the test generated; after its last run, measure them all (and fail above the limit)."""
    settings = item.config.stash[SETTINGS]
    tokens, describe = run.recorded_run()
    result, failure = add_run(item.stash.setdefault(ITEM_REPEATS, []), tokens, describe, settings.repeat,
                              item.nodeid, settings.repeat_max_distinct)
    if result is not None:
        item.config.stash[REPORT].repeated[item.nodeid] = result
    if failure is not None:
        pytest.fail(failure, pytrace=False)


class RepeatRunner:
    """``--probe=repeat:N``: runs each cassette-backed test's whole protocol (setup, call, teardown) N times,
    with fresh function-scoped fixtures each time, and reports it once: its first failing run, else its last."""

    def __init__(self, repeats: int) -> None:
        self.repeats = repeats

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
        if not _uses_cassette(item):
            return None  # pytest's own protocol: run once
        from _pytest.runner import runtestprotocol  # what pytest's protocol (and pytest-rerunfailures) runs

        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        item.stash[ITEM_REPEATS] = []
        for number in range(1, self.repeats + 1):
            last = number == self.repeats
            # Between runs only the test's own fixtures are torn down: its parent stays set up (module,
            # class and session fixtures, the live model among them).
            reports = runtestprotocol(item, log=False, nextitem=nextitem if last else item.parent)
            if last or any(report.failed for report in reports):
                break
        for report in reports:
            if self.repeats > 1 and number < self.repeats:
                report.sections.append(("chatstream repeat", f"run {number} of {self.repeats} failed"))
            item.ihook.pytest_runtest_logreport(report=report)
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True


def _verify_error(item: pytest.Item, error: BaseException) -> None:
    """Note in the report that comparing ``item``'s live run with its cassette raised ``error``."""
    item.config.stash[REPORT].verified[item.nodeid] = error_verdict(
        error, item.nodeid, item.stash[ITEM_CASSETTE], item.stash.get(ITEM_RECORDED_BY, None))


def miss_longrepr(error: BaseException, original: Any, count: int) -> Any:
    """The failure report of a test that failed after the app caught ``error``: that error first."""
    longrepr = pytest.ExceptionInfo.from_exception(error).getrepr(style="short", chain=False)
    more = f" ({count} cassette errors in all; this is the first)" if count > 1 else ""
    longrepr.addsection(
        "chatstream: where the cassette error went",
        f"The app under test caught this {type(error).__name__}{more} and answered with an error "
        "instead (the captured log shows it too). The test itself then failed with:\n\n" + str(original),
    )
    return longrepr


def _verify(item: pytest.Item, run: CassetteRun, fail: bool) -> None:
    verdict = verdict_for(run.verify(), item.nodeid, item.stash[ITEM_CASSETTE], item.stash.get(ITEM_RECORDED_BY, None))
    item.config.stash[REPORT].verified[item.nodeid] = verdict
    message = diverged_message(verdict)
    if fail and message is not None:
        pytest.fail(message, pytrace=False)


# -- the report ------------------------------------------------------------------------------------------


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    report = config.stash[REPORT]
    if _is_worker(config):
        config.workeroutput["chatstream"] = report.to_json()
        return
    ClaimBoard.for_run(config.stash[RUN_ID]).remove()
    settings = config.stash[SETTINGS]
    if (settings.mode is Mode.VERIFY and report.verified) or settings.mode is Mode.REPEAT:
        settings.report_path.parent.mkdir(parents=True, exist_ok=True)
        settings.report_path.write_text(report.report_json() + "\n", encoding="utf-8")
    _write_unused_report(config, settings, report, exitstatus)


def _write_unused_report(config: pytest.Config, settings: Settings, report: Report, exitstatus: int) -> None:
    """After a plain run over the whole suite that ran to the end: the cassettes no test used, for
    ``chatstream cassette prune`` (a partial or interrupted run cannot know who uses a cassette)."""
    whole_run = config.args_source is not pytest.Config.ArgsSource.ARGS
    if settings.mode is not Mode.REPLAY or not whole_run or not settings.cassette_dir.is_dir() or \
            exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        return
    from chatstream.cassettes._unused_report import write_unused_report

    with contextlib.suppress(OSError):  # a read-only checkout: nothing to prune from there anyway
        write_unused_report(settings.cassette_dir, report.unused(cassettes_on_disk(settings.cassette_dir), True))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _is_worker(config):
        return
    settings, report = config.stash[SETTINGS], config.stash[REPORT]
    if not report.tests and not settings.list_unused and not settings.live:
        return
    unused = None
    if settings.list_unused:
        whole_run = config.args_source is not pytest.Config.ArgsSource.ARGS
        unused = report.unused(cassettes_on_disk(settings.cassette_dir), whole_run=whole_run)
    terminalreporter.section("chatstream cassettes")
    for line in report.lines(unused):
        terminalreporter.write_line(line)
    if (settings.mode is Mode.VERIFY and report.verified) or settings.mode is Mode.REPEAT:
        terminalreporter.write_line(f"{settings.mode.value} report: {settings.report_path}")


# -- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture
def chatstream_config() -> dict:
    """Override point: ChatStream arguments (sampling, limits, prompt class, seed) for the fixtures."""
    return {"seed": 0}


@pytest.fixture(scope="session")
def chatstream_live_model(pytestconfig: pytest.Config) -> tuple[Any, Any]:
    """Override point: the live (model, tokenizer) under --probe, loaded from chatstream_model_path."""
    settings = pytestconfig.stash[SETTINGS]
    if not settings.live:
        raise configuration_error(
            "chatstream_live_model loads the live model, which only a --probe run does; "
            "plain pytest replays cassettes with mock_transformer."
        )
    if settings.model_path is None:
        raise configuration_error(NO_MODEL_MESSAGE.format(env=MODEL_ENV))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chatstream.engine.device import resolve_device

    device = resolve_device(settings.device)
    model = AutoModelForCausalLM.from_pretrained(settings.model_path).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(settings.model_path)
    return model, tokenizer


@pytest.fixture
def chatstream_device(pytestconfig: pytest.Config) -> str:
    """The torch device the fixtures run on: cpu in replay, --probe-device under --probe."""
    settings = pytestconfig.stash[SETTINGS]
    if not settings.live:
        return "cpu"  # replay needs no accelerator
    from chatstream.engine.device import resolve_device

    return str(resolve_device(settings.device))


def _sampling_metadata(chatstream_config: dict) -> dict:
    from chatstream.engine.generation import GenerationParams

    fields = GenerationParams.__dataclass_fields__
    return {k: v for k, v in chatstream_config.items() if k in fields}


@pytest.fixture
def mock_transformer(request: pytest.FixtureRequest, chatstream_config: dict) -> Iterator[Any]:
    """The test's MockTransformer (replay), or a recording stand-in with the same getters under --probe."""
    config, item = request.config, request.node
    settings, report = config.stash[SETTINGS], config.stash[REPORT]
    if ITEM_PROBLEM in item.stash:
        raise configuration_error(item.stash[ITEM_PROBLEM])
    rel = cassette_relpath(item)
    cassette = settings.cassette_dir / rel
    marker = item.get_closest_marker(MARKER)
    fidelity = settings.fidelity_for(marker.kwargs.get("fidelity") if marker else None)
    named = marker is not None and bool(marker.args or marker.kwargs.get("name"))
    action, recorder, board = plan_cassette(settings.mode, cassette, rel, item.nodeid, named,
                                            config.stash.get(SELECTED_USERS, {}), config.stash[RUN_ID])
    item.stash[ITEM_CASSETTE] = rel

    if action is Action.MISSING:
        report.missing[rel] = item.nodeid
        message = missing_message(item.nodeid, relpath_or_abs(cassette, config.rootpath))
        message += _rename_hint(config, settings, rel)
        if settings.missing == "skip":
            pytest.skip(message)
        raise cassette_not_found(message)

    if action is Action.REPLAY:
        transformer = replay_transformer(cassette)
        stale = config.stash[STALE].warning(cassette, transformer.manifest, item.nodeid)
        if stale is not None:
            warnings.warn(stale, stacklevel=1)
        report.add_replayed(rel, item.nodeid)
        yield transformer
        return

    try:
        model, tokenizer = request.getfixturevalue("chatstream_live_model")
        run = CassetteRun(cassette, action, fidelity, sampling=_sampling_metadata(chatstream_config),
                          extra_metadata={"test": item.nodeid})
    except BaseException:
        if board is not None:
            board.release(cassette, recorded=False)  # let the next test that shares it record it
        raise
    item.stash[ITEM_RUN] = run
    if action is Action.VERIFY and recorder not in (None, item.nodeid):
        item.stash[ITEM_RECORDED_BY] = recorder  # moved or copied from another test's: verified, and said so
    try:
        yield run.wrap(model, tokenizer, chatstream_config.get("token_sampler"))
    finally:
        if action is Action.RECORD:
            # Written or dropped once the whole teardown is known (_settle_recording): a fixture torn down
            # after this one may still fail.
            item.stash[ITEM_PENDING] = PendingRecording(run, rel, board)
            run.close_recorder()
        else:
            run.finish(False)


def _settle_recording(item: pytest.Item, teardown: pytest.TestReport | None) -> None:
    """Write the test's recorded cassette if its call and its whole teardown passed, else keep the old one."""
    pending = item.stash.get(ITEM_PENDING, None)
    if pending is None:
        return
    del item.stash[ITEM_PENDING]
    teardown_passed = teardown is not None and teardown.passed
    problem = settle_recording(pending, item.config.stash[REPORT], item.nodeid, item.stash.get(ITEM_PASSED, False),
                               teardown_passed, teardown_known=teardown is not None)
    if problem is not None and teardown is not None:
        teardown.outcome = "failed"
        teardown.longrepr = problem


def _rename_hint(config: pytest.Config, settings: Settings, rel: str) -> str:
    """After a rename: the unused cassette on disk that is likely this test's, and how to move it."""
    report = config.stash[REPORT]
    whole_run = config.args_source is not pytest.Config.ArgsSource.ARGS
    unused = report.unused(cassettes_on_disk(settings.cassette_dir), whole_run=whole_run)
    return rename_hint(rel, unused, settings.cassette_dir, config.invocation_params.dir)


@pytest.fixture
def chatstream_model(mock_transformer: Any) -> Any:
    """The model the test runs on: replayed from its cassette, or live and recorded under --probe."""
    return mock_transformer.get_model()


@pytest.fixture
def chatstream_tokenizer(mock_transformer: Any) -> Any:
    """The tokenizer the test runs on: replayed from its cassette, or live and recorded under --probe."""
    return mock_transformer.get_tokenizer()


@pytest.fixture
def chatstream_token_sampler(mock_transformer: Any) -> Any:
    """The token sampler the test runs on: replayed from its cassette, or live and recorded under --probe."""
    return mock_transformer.get_token_sampler()


@pytest.fixture
def chatstream_factory(
    chatstream_model: Any, chatstream_tokenizer: Any, chatstream_token_sampler: Any, chatstream_device: str,
    chatstream_config: dict,
) -> Callable[..., Any]:
    """Build ChatStreams on the test's model, tokenizer and sampler: ``chatstream_factory(**overrides)``."""
    from chatstream.serving.chat_stream import ChatStream

    def build(**overrides: Any) -> Any:
        kwargs = {**chatstream_config, **overrides}
        kwargs.update(model=chatstream_model, tokenizer=chatstream_tokenizer,
                      token_sampler=chatstream_token_sampler, device=chatstream_device)
        return ChatStream(**kwargs)

    return build


# The two async fixtures run under pytest-asyncio in any asyncio_mode (strict runs only the async fixtures
# declared with pytest_asyncio.fixture) and under anyio. When pytest-asyncio is installed they are declared
# with pytest_asyncio.fixture; for a test that anyio runs, pytest_fixture_setup below hands anyio the plain
# function instead, so the fixture runs in the loop of the test that uses it whichever plugin wraps first.
_PLAIN_ASYNC_FIXTURES: dict[Callable[..., Any], Callable[..., Any]] = {}  # asyncio-declared copy -> plain


def _async_fixture(func: Callable[..., Any], name: str) -> Any:
    try:
        import pytest_asyncio
    except ImportError:
        return pytest.fixture(func, name=name)
    copy = types.FunctionType(func.__code__, func.__globals__, name, func.__defaults__, func.__closure__)
    copy.__doc__, copy.__qualname__, copy.__kwdefaults__ = func.__doc__, name, func.__kwdefaults__
    copy.__annotations__ = dict(func.__annotations__)
    _PLAIN_ASYNC_FIXTURES[copy] = func
    return pytest_asyncio.fixture(copy, name=name)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Any:
    declared = fixturedef.func
    plain = _PLAIN_ASYNC_FIXTURES.get(declared)
    if plain is None or "anyio_backend" not in request.fixturenames:
        return (yield)
    fixturedef.func = plain  # an anyio test: anyio runs the fixture in the test's loop, not pytest-asyncio
    try:
        return (yield)
    finally:
        fixturedef.func = declared


async def _chat_stream(chatstream_factory: Callable[..., Any]) -> AsyncIterator[Any]:
    """A ChatStream from chatstream_factory, started before the test and stopped after it (async)."""
    stream = chatstream_factory()
    async with stream.lifespan():
        yield stream


chat_stream = _async_fixture(_chat_stream, "chat_stream")


@pytest.fixture
def chatstream_app(chatstream_factory: Callable[..., Any]) -> Any:
    """Override point: the app the clients talk to; default: a FastAPI app with the standard routes."""
    from fastapi import FastAPI

    stream = chatstream_factory()
    app = FastAPI(lifespan=stream.lifespan)
    app.state.chat_stream = stream
    stream.append_middlewares(app, {"fast_session": {"secret_key": secrets.token_urlsafe(16)}})
    stream.append_apis(app, {"all": True})
    return app


async def _chatstream_client(chatstream_app: Any) -> AsyncIterator[Any]:
    """An httpx.AsyncClient on chatstream_app through ASGITransport, its lifespan running (async)."""
    from ._asgi import asgi_client

    async with asgi_client(chatstream_app) as client:
        yield client


chatstream_client = _async_fixture(_chatstream_client, "chatstream_client")


async def _chatstream_openai(chatstream_app: Any) -> AsyncIterator[Any]:
    """An openai.AsyncOpenAI client on chatstream_app's /v1 API through ASGITransport (needs `openai`) (async)."""
    import openai

    from ._asgi import asgi_client

    stream = getattr(getattr(chatstream_app, "state", None), "chat_stream", None)
    api_key = getattr(getattr(stream, "openai", None), "context", None)
    api_key = getattr(api_key, "api_key", None) or "chatstream-test"
    async with asgi_client(chatstream_app) as http_client:
        base_url = str(http_client.base_url).rstrip("/") + "/v1"
        async with openai.AsyncOpenAI(api_key=api_key, base_url=base_url, http_client=http_client,
                                      max_retries=0) as client:
            yield client


chatstream_openai = _async_fixture(_chatstream_openai, "chatstream_openai")


@pytest.fixture
def chatstream_sync_client(chatstream_app: Any) -> Iterator[Any]:
    """A starlette TestClient on chatstream_app, its lifespan running, for plain ``def`` tests."""
    with warnings.catch_warnings():
        # starlette < 1.8 names anyio.abc.BlockingPortal when imported, which newer anyio deprecates: not
        # the user's code, so it must not fail a suite that turns warnings into errors.
        warnings.filterwarnings("ignore", "The anyio.abc.BlockingPortal alias is deprecated", DeprecationWarning)
        from starlette.testclient import TestClient

    with TestClient(chatstream_app) as client:
        yield client
