import contextlib
import importlib.util
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from hypothesis import settings

# The property tests search the same examples on every run, so CI never fails by chance; run them with
# HYPOTHESIS_PROFILE=explore (and more examples) to search anew.
settings.register_profile("chatstream", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "chatstream"))

# One torch thread per process: the tiny model is faster that way on a shared 2-core machine,
# and test subprocesses (chatstream serve) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

pytest_plugins = ["pytester"]  # the plugin tests run pytest in pytest


def _real_model_tool():
    """tools/real_model.py (tools/ is no package), for where the real model lives and whether it is built."""
    path = Path(__file__).resolve().parent.parent / "tools" / "real_model.py"
    spec = importlib.util.spec_from_file_location("_real_model_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    """The real chat model's directory (SmolLM2-135M-Instruct, built by tools/real_model.py into
    $CHATSTREAM_REAL_MODEL or ~/.cache/chatstream/smollm2-135m-instruct); the test is skipped when it is absent.
    Tests that use it carry the `real_model` marker."""
    tool = _real_model_tool()
    path = tool.default_real_model_dir()
    if not (path / "config.json").is_file():
        pytest.skip(f"the real chat model is not built at {path}: run `python tools/real_model.py` (needs "
                    f"`pip install \"chatstream[real-model]\"`), or point ${tool.ENV} at a built copy")
    return path


@pytest.fixture(autouse=True)
def _no_benchmark_plugin_in_pytester(request):
    """pytester's inner runs read their own ini, not this project's addopts: keep pytest-benchmark (when a
    machine has it) out of them, since under xdist it warns there and this suite treats warnings as errors."""
    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester")  # it clears PYTEST_ADDOPTS when set up, so set ours after it
        request.getfixturevalue("monkeypatch").setenv("PYTEST_ADDOPTS", "-p no:benchmark")


@contextlib.contextmanager
def run_server(app):
    """Run ``app`` on uvicorn on a free loopback port in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="on", log_level="warning", ws="none", http="h11",
                            timeout_graceful_shutdown=3, backlog=512)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture
def serve():
    """``base_url = serve(app)`` runs the app on a real loopback uvicorn server until the test ends."""
    with contextlib.ExitStack() as stack:
        yield lambda app: stack.enter_context(run_server(app))
