"""Real processes for the session-store tests: a ``redis-server`` on a free loopback port in a temporary
directory (stopped by its process id), and ``chatstream serve`` replicas."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server")
NEEDS_REDIS = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (Debian: apt-get install redis-server; "
                                 "tools/setup.sh installs it where apt-get exists)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A real redis-server on 127.0.0.1:``port`` with its files in ``directory``; ``restart()`` keeps its data."""

    def __init__(self, directory: Path, password: str | None = None) -> None:
        self.directory, self.password = directory, password
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                   "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"]
        if self.password:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            assert self.process.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not start within 10 s"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def redis_server(directory: Path, password: str | None = None) -> Iterator[RedisServer]:
    server = RedisServer(directory, password)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Replica:
    """One ``chatstream serve`` process (``url`` once it is ready)."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        command = [sys.executable, "-m", "chatstream.serving.cli", "serve", "--port", "0", *args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self._watchdog = threading.Timer(300, self.process.kill)  # never hang the suite on a stuck server
        self._watchdog.start()
        lines = []
        for line in self.process.stdout:
            lines.append(line)
            match = re.search(r"ChatStream is ready: open (http://\S+) ", line)
            if match:
                self.url = match.group(1)
                # keep reading stdout so the server never blocks on a full pipe
                self._drains = [threading.Thread(target=lambda stream=stream: [None for _ in stream], daemon=True)
                                for stream in (self.process.stdout, self.process.stderr)]
                for drain in self._drains:
                    drain.start()
                return
        errors = self.process.stderr.read()
        self.stop()
        raise AssertionError(f"serve exited before it was ready: {lines} {errors}")

    def kill(self) -> None:
        """SIGKILL: no clean-up at all (a crashed replica)."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._close()

    def _close(self) -> None:
        self._watchdog.cancel()
        for drain in getattr(self, "_drains", []):
            drain.join(5)
        self.process.stdout.close()
        self.process.stderr.close()


@contextlib.contextmanager
def replicas(count: int, *args: str, env: dict | None = None) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    try:
        for index in range(count):
            started.append(Replica("--replica-name", f"r{index}", *args, env=env))
        yield started
    finally:
        for replica in started:
            replica.stop()
