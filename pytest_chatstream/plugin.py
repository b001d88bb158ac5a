"""The pytest surface of pytest_chatstream: options, ini options, marker, fixtures and hooks.

Plain ``pytest`` replays each test's cassette; ``pytest --probe`` records them with the live model,
``--probe=missing`` records only the absent ones and ``--probe=verify`` compares the live model with
them. The hooks and fixtures here read pytest's objects and delegate: everything that does not need
pytest lives in the ``_``-modules beside this one, which take plain arguments.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from ._app import chat_stream_factory, default_app, openai_client, sync_client
from ._async_fixtures import async_fixture, plain_function
from ._cmdline import full_command_line, is_test_path, model_path_misread, probe_path_message
from ._errors import cassette_not_found, configuration_error, is_configuration_error
from ._misses import MissLog, miss_section
from ._model import load_live_model, run_device, with_model_dir
from ._options import GROUP, INI_OPTIONS, MARKER_HELP, OPTIONS, settings_arguments
from ._paths import MARKER, cassette_relpath_for, collisions, module_cassette_dir, relpath_or_abs
from ._recording import PendingRecording, open_run, plan_cassette, selected_users, settle_recording, tests_needing_model
from ._repeat import add_live_run, repeated_reports
from ._report import Report, rename_hint, save_unused_report, summary_lines, write_json_report
from ._session import missing_message, replay_transformer, sampling_metadata
from ._settings import (
    Action,
    Mode,
    Settings,
    addopts_probe_message,
    is_probe_mode,
    missing_model_message,
    probe_on_command_line,
    resolve_settings,
)
from ._staging import ClaimBoard
from ._stale import StaleCheck
from ._state import ItemState
from ._verify import verify_after_call

USES_CASSETTE = "mock_transformer"  # every cassette-backed fixture depends on this one

SETTINGS = pytest.StashKey[Settings]()
REPORT = pytest.StashKey[Report]()
RUN_ID = pytest.StashKey[str]()
STALE = pytest.StashKey[StaleCheck]()
SELECTED_USERS = pytest.StashKey[dict]()
ITEM = pytest.StashKey[ItemState]()


# -- options --------------------------------------------------------------------------------------------


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(*GROUP)
    for name, kwargs in OPTIONS:
        group.addoption(name, **kwargs)
    for name, help_text in INI_OPTIONS:
        parser.addini(name, help_text)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Refuse a misread ``--probe-model PATH`` before any conftest is imported: the wrong rootdir drops
    the ini file, and with it the ``pythonpath`` a conftest may need to import the app."""
    command_line = full_command_line(os.environ.get("PYTEST_ADDOPTS", ""), early_config.invocation_params.args)
    test_args = list(getattr(early_config.known_args_namespace, "file_or_dir", None) or [])
    _refuse_a_misread_model_path(early_config, command_line, test_args)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    probe = config.getoption("--probe")
    workerinput = getattr(config, "workerinput", None)
    if probe is not None and not is_probe_mode(probe):
        probe = _probe_value_as_test_path(config, probe)
    # The mode comes from the command line only, never from the ini option addopts.
    command_line = full_command_line(os.environ.get("PYTEST_ADDOPTS", ""), config.invocation_params.args)
    if probe is not None and workerinput is None and not probe_on_command_line(command_line):
        raise pytest.UsageError(addopts_probe_message(probe))
    if workerinput is None:
        _refuse_a_misread_model_path(config, command_line, _test_args(config))
    try:
        settings = with_model_dir(resolve_settings(
            probe=probe, invocation_dir=config.invocation_params.dir, rootpath=config.rootpath,
            **settings_arguments(config.getoption, config.getini, os.environ),
        ))
    except ValueError as error:  # a ConfigurationError names the bad option, or the missing model
        if not is_configuration_error(error):
            raise
        raise pytest.UsageError(str(error)) from None
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
    config.args = [value, *_test_args(config)]
    config.args_source = pytest.Config.ArgsSource.ARGS
    config.option.file_or_dir = [value, *(config.option.file_or_dir or [])]
    config.option.probe = Mode.ALL.value
    return Mode.ALL.value


def _refuse_a_misread_model_path(config: pytest.Config, command_line: list[str], test_args: list[str]) -> None:
    problem = model_path_misread(
        command_line=command_line, test_args=test_args, rootpath=config.rootpath, inipath=config.inipath,
        inifile=getattr(config.option, "inifilename", None),
        override_ini=getattr(config.option, "override_ini", None),
        rootdir=getattr(config.option, "rootdir", None) or None, invocation_dir=config.invocation_params.dir,
    )
    if problem is not None:
        raise pytest.UsageError(problem)


def _test_args(config: pytest.Config) -> list[str]:
    """The test paths given on the command line (none when pytest took testpaths or the current directory)."""
    return list(config.args) if _partial_run(config) else []


def _partial_run(config: pytest.Config) -> bool:
    return config.args_source is pytest.Config.ArgsSource.ARGS


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
    """The test's cassette, relative to the cassette directory: the marker's name, else its node id's (or the
    project's ``pytest_chatstream_cassette_path`` hook's). Raises ConfigurationError for an unusable name."""
    marker = item.get_closest_marker(MARKER)
    name = (marker.args[0] if marker.args else marker.kwargs.get("name")) if marker else None
    return cassette_relpath_for(item.nodeid, name, lambda default: item.config.hook.pytest_chatstream_cassette_path(
        item=item, default=default))


def _uses_cassette(item: pytest.Item) -> bool:
    return USES_CASSETTE in getattr(item, "fixturenames", ())


def _state(item: pytest.Item) -> ItemState:
    return item.stash.setdefault(ITEM, ItemState())


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselect: every collected test's cassette is expected
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Note every collected test's cassette; a test whose cassette is unusable errors at its setup."""
    report = config.stash[REPORT]
    usable: list[tuple[pytest.Item, str]] = []
    cassette_items = [item for item in items if _uses_cassette(item)]
    for item in cassette_items:
        try:
            usable.append((item, cassette_relpath(item)))
        except ValueError as error:
            if not is_configuration_error(error):
                raise
            _state(item).problem = f"{item.nodeid}: {error}"
    tests = [(item.nodeid, rel, item.get_closest_marker(MARKER) is not None) for item, rel in usable]
    for (item, _), problem in zip(usable, collisions(tests), strict=True):
        if problem is not None:
            _state(item).problem = problem
    report.expected = sorted(set(report.expected) | {rel for _, rel in usable})
    report.collected_modules = sorted(set(report.collected_modules) |
                                      {module_cassette_dir(item.nodeid) for item in cassette_items})


def pytest_collection_finish(session: pytest.Session) -> None:
    """The selected tests that use each named cassette, in run order; one usage error, before any test runs,
    when tests would load the live model and none is configured."""
    items = [item for item in session.items if _uses_cassette(item) and _state(item).problem is None]
    named: list[tuple[str, str | None]] = []
    for item in items:
        rel = None
        if item.get_closest_marker(MARKER) is not None:
            with contextlib.suppress(ValueError):
                rel = cassette_relpath(item)
        named.append((item.nodeid, rel))
    session.config.stash[SELECTED_USERS] = selected_users(named)
    settings = session.config.stash[SETTINGS]
    # Under xdist the controller collects nothing; workers error per test.
    if _is_worker(session.config) or not settings.live or settings.model_spec:
        return
    loading: list[tuple[str, str]] = []
    for item in items:
        defs = session._fixturemanager.getfixturedefs("chatstream_live_model", item) or ()
        if not defs or getattr(defs[-1].func, "__module__", None) != __name__:
            continue  # the project overrides chatstream_live_model: it knows its model
        with contextlib.suppress(ValueError):
            loading.append((item.nodeid, cassette_relpath(item)))
    problem = missing_model_message(settings, tests_needing_model(settings.mode, settings.cassette_dir, loading))
    if problem is not None:
        raise pytest.UsageError(problem)


# -- outcome bookkeeping ---------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    started = time.perf_counter()
    if not _uses_cassette(item):
        return (yield)
    state = _state(item)
    state.misses = MissLog()
    try:
        with state.misses:
            return (yield)
    finally:
        _settle_recording(item, None)  # a run stopped before the teardown report: keep the old cassette
        if state.cassette is not None:
            report = item.config.stash[REPORT]
            report.tests += 1
            report.seconds += time.perf_counter() - started


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    state = item.stash.get(ITEM, None)
    if state is None:
        return report
    if report.when == "teardown":
        _settle_recording(item, report)
    if report.when == "call":
        state.passed = report.passed
        misses = state.misses
        caught = misses.behind(call.excinfo.value if call.excinfo is not None else None) if misses else None
        if report.failed and caught is not None:
            # The cassette error the app caught first, the test's own failure below it.
            longrepr = pytest.ExceptionInfo.from_exception(caught).getrepr(style="short", chain=False)
            longrepr.addsection(*miss_section(caught, report.longrepr, len(misses.errors)))
            report.longrepr = longrepr
    return report


def _settle_recording(item: pytest.Item, teardown: pytest.TestReport | None) -> None:
    """Write the test's recorded cassette if its call and its whole teardown passed, else keep the old one."""
    state = item.stash[ITEM]
    pending, state.pending = state.pending, None
    if pending is None:
        return
    problem = settle_recording(pending, item.config.stash[REPORT], item.nodeid, state.passed,
                               teardown is not None and teardown.passed, teardown_known=teardown is not None)
    if problem is not None and teardown is not None:
        teardown.outcome = "failed"
        teardown.longrepr = problem


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    state = item.stash.get(ITEM, None)
    run = state.run if state is not None else None
    if run is None or run.action not in (Action.VERIFY, Action.REPEAT):
        return (yield)
    report, settings, test = item.config.stash[REPORT], item.config.stash[SETTINGS], item.nodeid
    if run.action is Action.REPEAT:
        result = yield
        failure = add_live_run(state.repeats, run, report, test, settings.repeat, settings.repeat_max_distinct)
    else:
        try:
            result = yield
        except BaseException:
            _, section = verify_after_call(run, report, test, state.cassette, state.recorded_by, call_failed=True)
            if section is not None:
                item.add_report_section("call", "chatstream verify", section)
            raise
        failure, _ = verify_after_call(run, report, test, state.cassette, state.recorded_by, call_failed=False)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    return result


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
        _state(item).repeats = []
        # Between runs only the test's own fixtures are torn down: its parent stays set up (module, class and
        # session fixtures, the live model among them).
        reports = repeated_reports(
            lambda last: runtestprotocol(item, log=False, nextitem=nextitem if last else item.parent), self.repeats)
        for report in reports:
            item.ihook.pytest_runtest_logreport(report=report)
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True


# -- the report ------------------------------------------------------------------------------------------


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    report = config.stash[REPORT]
    if _is_worker(config):
        config.workeroutput["chatstream"] = report.to_json()
        return
    ClaimBoard.for_run(config.stash[RUN_ID]).remove()
    settings = config.stash[SETTINGS]
    write_json_report(settings, report)
    save_unused_report(settings, report, whole_run=not _partial_run(config),
                       ran_to_end=exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _is_worker(config):
        return
    lines = summary_lines(config.stash[SETTINGS], config.stash[REPORT], whole_run=not _partial_run(config))
    if lines:
        terminalreporter.section("chatstream cassettes")
        for line in lines:
            terminalreporter.write_line(line)


# -- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture
def chatstream_config() -> dict:
    """Override point: ChatStream arguments (sampling, limits, prompt class, seed) for the fixtures."""
    return {"seed": 0}


@pytest.fixture(scope="session")
def chatstream_live_model(pytestconfig: pytest.Config) -> tuple[Any, Any]:
    """Override point: the live (model, tokenizer) under --probe, loaded from chatstream_model_path."""
    return load_live_model(pytestconfig.stash[SETTINGS])


@pytest.fixture
def chatstream_device(pytestconfig: pytest.Config) -> str:
    """The torch device the fixtures run on: cpu in replay, --probe-device under --probe."""
    return run_device(pytestconfig.stash[SETTINGS])


@pytest.fixture
def mock_transformer(request: pytest.FixtureRequest, chatstream_config: dict) -> Iterator[Any]:
    """The test's MockTransformer (replay), or a recording stand-in with the same getters under --probe."""
    config, item, state = request.config, request.node, _state(request.node)
    settings, report = config.stash[SETTINGS], config.stash[REPORT]
    if state.problem is not None:
        raise configuration_error(state.problem)
    rel = cassette_relpath(item)
    cassette = settings.cassette_dir / rel
    marker = item.get_closest_marker(MARKER)
    fidelity = settings.fidelity_for(marker.kwargs.get("fidelity") if marker else None)
    named = marker is not None and bool(marker.args or marker.kwargs.get("name"))
    action, recorder, board = plan_cassette(settings.mode, cassette, rel, item.nodeid, named,
                                            config.stash.get(SELECTED_USERS, {}), config.stash[RUN_ID])
    state.cassette = rel

    if action is Action.MISSING:
        report.missing[rel] = item.nodeid
        message = missing_message(item.nodeid, relpath_or_abs(cassette, config.rootpath)) + rename_hint(
            rel, report.unused_in(settings.cassette_dir, whole_run=not _partial_run(config)), settings.cassette_dir,
            config.invocation_params.dir)
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

    run, model, tokenizer = open_run(lambda: request.getfixturevalue("chatstream_live_model"), cassette, action,
                                     fidelity, sampling_metadata(chatstream_config), item.nodeid, board)
    state.run = run
    if action is Action.VERIFY and recorder not in (None, item.nodeid):
        state.recorded_by = recorder  # moved or copied from another test's: verified, and said so
    try:
        yield run.wrap(model, tokenizer, chatstream_config.get("token_sampler"))
    finally:
        if action is Action.RECORD:
            # Written or dropped once the whole teardown is known (_settle_recording): a fixture torn down
            # after this one may still fail.
            state.pending = PendingRecording(run, rel, board)
            run.close_recorder()
        else:
            run.finish(False)


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
    return chat_stream_factory(chatstream_model, chatstream_tokenizer, chatstream_token_sampler, chatstream_device,
                               chatstream_config)


# The async fixtures below run under pytest-asyncio and under anyio (_async_fixtures.py): for a test that anyio
# runs, anyio gets the plain function.
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Any:
    declared = fixturedef.func
    plain = plain_function(declared)
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


chat_stream = async_fixture(_chat_stream, "chat_stream")


@pytest.fixture
def chatstream_app(chatstream_factory: Callable[..., Any]) -> Any:
    """Override point: the app the clients talk to; default: a FastAPI app with the standard routes."""
    return default_app(chatstream_factory())


async def _chatstream_client(chatstream_app: Any) -> AsyncIterator[Any]:
    """An httpx.AsyncClient on chatstream_app through ASGITransport, its lifespan running (async)."""
    from ._asgi import asgi_client

    async with asgi_client(chatstream_app) as client:
        yield client


chatstream_client = async_fixture(_chatstream_client, "chatstream_client")


async def _chatstream_openai(chatstream_app: Any) -> AsyncIterator[Any]:
    """An openai.AsyncOpenAI client on chatstream_app's /v1 API through ASGITransport (needs `openai`) (async)."""
    async with openai_client(chatstream_app) as client:
        yield client


chatstream_openai = async_fixture(_chatstream_openai, "chatstream_openai")


@pytest.fixture
def chatstream_sync_client(chatstream_app: Any) -> Iterator[Any]:
    """A starlette TestClient on chatstream_app, its lifespan running, for plain ``def`` tests."""
    with sync_client(chatstream_app) as client:
        yield client
