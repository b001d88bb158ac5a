"""Every Python block and shell command in README.md and docs/*.md runs as written (tests/_doc_blocks.py).

One test per snippet. The snippets of a document depend on the ones before them (a namespace, files
written into its scratch directory, cassettes a command recorded), so running one runs the document's
earlier snippets first, once per process, whatever order the tests run in. Snippets marked
``not run: REASON`` in the document skip with that reason. ``chatstream serve`` runs until stopped:
it is started on a free port, must answer ``/health`` within a minute, and is stopped.

What the snippets get from the test (nothing else): the checkout on PYTHONPATH (so ``chatstream`` is
this checkout's), ``CHATSTREAM_SESSION_SECRET`` set (the README says to set it) and
``CHATSTREAM_PROBE_DIR`` pointing into the scratch directory, so probe recordings stay out of ~/.cache.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from _doc_blocks import Snippet, documents, snippets

ROOT = Path(__file__).resolve().parent.parent
COMMAND_TIMEOUT_S = 180
SERVE_START_TIMEOUT_S = 60
DOC_ENV = {"CHATSTREAM_SESSION_SECRET": "doc-tests-session-secret-0123456789"}

ALL = [snippet for doc in documents(ROOT) for snippet in snippets(doc, ROOT)]


class DocumentRun:
    """The state one document's snippets share: a scratch directory, a namespace, what ran and how it ended."""

    def __init__(self, doc: str) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="chatstream-doc-"))
        self.namespace: dict = {"__name__": f"doc:{doc}"}
        self.done: dict[int, str | None] = {}  # index in the document -> None (ran) or the failure

    def env(self) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        bin_dir = str(Path(sys.executable).parent)
        # A reader's shell has none of the PYTEST_* variables this run (and xdist) set.
        outer = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
        return {**outer, **DOC_ENV, "PYTHONPATH": path, "CHATSTREAM_PROBE_DIR": str(self.scratch / "probe_data"),
                "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}


_RUNS: dict[str, DocumentRun] = {}


@pytest.fixture(scope="session", autouse=True)
def _remove_scratch_directories():
    yield
    for run in _RUNS.values():
        shutil.rmtree(run.scratch, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_python(snippet: Snippet, run: DocumentRun) -> None:
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.update({key: value for key, value in run.env().items() if key != "PATH"})
    os.chdir(run.scratch)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(snippet.text, f"{snippet.doc}:{snippet.line}", "exec"), run.namespace)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def _serve(command: str, cwd: Path, env: dict[str, str]) -> None:
    """Start a `chatstream serve` command on a free port, wait for /health, stop it."""
    port = _free_port()
    process = subprocess.Popen(f"{command} --host 127.0.0.1 --port {port}", shell=True, cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"{command!r} exited with {process.returncode}:\n{process.stdout.read().decode()}")
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                if response.status == 200:
                    return
            time.sleep(0.5)
        raise AssertionError(f"{command!r} did not answer /health within {SERVE_START_TIMEOUT_S} s")
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)
        process.stdout.close()


def _run_shell(snippet: Snippet, run: DocumentRun) -> None:
    cwd = ROOT if snippet.in_checkout else run.scratch
    command = re.sub(r"\s#\s.*$", "", snippet.text).strip()
    if command.startswith("chatstream serve"):
        _serve(command, cwd, run.env())
        return
    done = subprocess.run(["bash", "-c", snippet.text], cwd=cwd, env=run.env(), capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 0, (
        f"{snippet.doc}:{snippet.line}: `{snippet.text}` exited with {done.returncode}\n"
        f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
    )


def _run_one(snippet: Snippet, run: DocumentRun) -> None:
    if snippet.kind == "file":
        target = run.scratch / snippet.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(snippet.text, encoding="utf-8")
    elif snippet.kind == "python":
        _run_python(snippet, run)
    else:
        _run_shell(snippet, run)


def _run_through(snippet: Snippet) -> None:
    """Run ``snippet`` after every earlier snippet of its document (each once per process)."""
    run = _RUNS.setdefault(snippet.doc, DocumentRun(snippet.doc))
    own = [item for item in ALL if item.doc == snippet.doc]
    for index, item in enumerate(own):
        if item.skip is not None:
            continue
        if index not in run.done:
            try:
                _run_one(item, run)
            except BaseException as error:
                run.done[index] = f"{type(error).__name__}: {error}"
                if item is snippet:
                    raise
            else:
                run.done[index] = None
        if item is snippet:
            if run.done[index] is not None:
                pytest.fail(f"{snippet.id} failed when an earlier test ran it: {run.done[index]}")
            return
        if run.done[index] is not None:
            pytest.fail(f"an earlier snippet of {snippet.doc} failed, so this one cannot run: "
                        f"{item.id}: {run.done[index]}")


def test_every_document_is_collected() -> None:
    found = {snippet.doc for snippet in ALL}
    assert "README.md" in found and "docs/pytest-plugin.md" in found
    assert all(doc.relative_to(ROOT).as_posix() in found or not snippets(doc, ROOT) for doc in documents(ROOT))


@pytest.mark.parametrize("snippet", ALL, ids=[snippet.id for snippet in ALL])
def test_doc_snippet(snippet: Snippet) -> None:
    if snippet.skip is not None:
        pytest.skip(f"marked in {snippet.doc}: not run: {snippet.skip}")
    _run_through(snippet)
