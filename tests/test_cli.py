import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from chatstream.app import create_app
from chatstream.chat_stream import ChatStream
from chatstream.cli import _url, main

EOS = "<::EOS::>"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--mock", "--queue-size", "0"], "--queue-size"),
        (["serve", "--mock", "--concurrency", "-1"], "--concurrency"),
        (["serve", "--mock", "--temperature", "-2"], "temperature"),
        (["serve", "--mock", "--device", "tpu"], "device"),
        (["serve", "--model", "/nonexistent/model"], "no config.json"),
    ],
)
def test_bad_arguments_exit_2_before_listening(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for option in ("--model", "--device", "--mock", "--host", "--port", "--concurrency", "--queue-size"):
        assert option in out


def test_printed_url():
    assert _url("0.0.0.0", 8000) == "http://127.0.0.1:8000/"
    assert _url("::", 80) == "http://[::1]:80/"


async def test_health_is_503_while_the_loader_runs(serve):
    release = threading.Event()

    def loader():
        release.wait(10)
        return ChatStream(use_mock_response=True, mock_params={"type": "echo"})

    ready = []
    base_url = serve(create_app(loader=loader, on_ready=ready.append))
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        assert (await client.get("/health")).status_code == 503
        assert (await client.post("/chat_stream", json={"user_input": "x"})).status_code == 503
        release.set()
        deadline = time.monotonic() + 10
        while (await client.get("/health")).status_code != 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert len(ready) == 1
        assert (await client.post("/chat_stream", json={"user_input": "x y"})).text.endswith("x y" + EOS)
        assert "<title>ChatStream</title>" in (await client.get("/")).text


@contextlib.contextmanager
def chatstream_serve(*args):
    """Run `chatstream serve --port 0 ...` in a subprocess; yields the URL it prints when ready."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "chatstream.cli", "serve", "--port", "0", *args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as process:
        watchdog = threading.Timer(120, process.kill)  # never hang the suite on a stuck server
        watchdog.start()
        try:
            lines = []
            for line in process.stdout:
                lines.append(line)
                match = re.search(r"ChatStream is ready: open (http://\S+) ", line)
                if match:
                    break
            else:
                raise AssertionError(f"serve exited before it was ready: {lines} {process.stderr.read()}")
            yield match.group(1)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
            finally:
                watchdog.cancel()
        assert process.returncode == 130, process.stderr.read()


def test_serve_defaults_to_the_bundled_model_and_serves_the_page():
    with chatstream_serve("--max-new-tokens", "8") as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/health").json()["status"] == "ok"
        assert "chatstream.js" in client.get("/").text
        answer = client.post("/chat_stream", json={"user_input": "Hello"})
        assert answer.status_code == 200 and answer.text.endswith(EOS)
        assert answer.headers["X-ChatStream-Last-Generated-Message-Id"]


def test_serve_mock_with_limits():
    args = ("--mock", "--mock-type", "echo", "--concurrency", "3", "--queue-size", "4")
    with chatstream_serve(*args) as url, httpx.Client(base_url=url, timeout=30) as client:
        worker = client.get("/get_load").json()["chatstream_workers"][0]
        assert (worker["max_processing"], worker["max_waiting"]) == (3, 4)
        assert client.post("/chat_stream", json={"user_input": "a b"}).text.endswith("a b" + EOS)


def test_stopping_the_server_while_the_model_loads_does_not_wait_for_the_load():
    from conftest import run_server

    release = threading.Event()
    loaded = []

    def loader():
        release.wait(20)  # a model that takes long to load
        loaded.append(True)
        return ChatStream(use_mock_response=True)

    threading.Timer(8, release.set).start()  # never leave the loader thread behind
    with run_server(create_app(loader=loader)) as base_url:
        assert httpx.get(base_url + "/health", timeout=10).status_code == 503
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 3 and not loaded
    release.set()
