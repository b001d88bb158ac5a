"""The built wheel is complete: installed (not editable) in a fresh venv, `chatstream serve` run from an empty
directory serves the bundled tiny model, and the package is typed.

Building needs the build backend (setuptools) from the package index: where pip cannot fetch it, the
tests skip saying why (tests/_package_index.py); `pytest -m "not wheel"` leaves them out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import httpx
import pytest
from _package_index import build_backend_unavailable

pytestmark = pytest.mark.wheel

ROOT = Path(__file__).resolve().parent.parent
EOS = "<::EOS::>"
# The checkout's own junk, never part of a build: copying the tree without it builds what a fresh clone builds.
NOT_SOURCE = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".venv", "venv*",
                                    ".ruff_cache", ".pytest_cache", "tmp", ".whl", ".gl", "node_modules")
MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}


def _run(command: list[str], **kwargs) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{command} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the working tree (so no stale build/ folder can leak into it)."""
    reason = build_backend_unavailable(ROOT)
    if reason is not None:
        pytest.skip(f"building the wheel needs its build backend from the package index, and {reason}; run it "
                    "where the index is reachable (or leave it out with -m 'not wheel')")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(work / "dist"),
          str(source)])
    (built,) = (work / "dist").glob("chatstream-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed. Its dependencies (torch, transformers, ...) come from this
    interpreter's site-packages through a .pth file, whose own .pth files (an editable install's finder)
    Python does not run: the only chatstream it can import is the installed wheel."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    outer = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    (purelib / "_outer_site_packages.pth").write_text("".join(f"{p}\n" for p in outer))
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)])
    return venv


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CHATSTREAM_BUNDLED_MODEL")}
    return {**env, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}


def test_wheel_carries_the_model_the_web_page_and_py_typed(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"chatstream/tiny_chat/{name}" for name in MODEL_FILES} <= names
    assert {"chatstream/web/index.html", "chatstream/web/chatstream.js", "chatstream/web/chatstream.css"} <= names
    assert "chatstream/py.typed" in names
    assert "pytest_chatstream/plugin.py" in names
    model = ROOT / "fixtures" / "tiny-chat" / "model.safetensors"
    assert zipfile.ZipFile(wheel).getinfo("chatstream/tiny_chat/model.safetensors").file_size == model.stat().st_size


def test_wheel_carries_every_module_of_the_checkout(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for package in ("chatstream", "pytest_chatstream")
               for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts}
    assert len(modules) > 40
    assert modules - names == set(), "modules missing from the wheel: list their package in setup.py"


def test_installed_package_is_the_wheel_and_finds_its_model(venv: Path, tmp_path: Path) -> None:
    code = ("import json, chatstream, chatstream.bundled as b; "
            "print(json.dumps([chatstream.__file__, str(b.bundled_model_path())]))")
    out = _run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, env=_clean_env())
    package_file, model_dir = map(Path, json.loads(out))
    assert package_file.is_relative_to(venv), f"imported {package_file}, not the installed wheel"
    assert Path(model_dir) == package_file.parent / "tiny_chat"
    assert {p.name for p in Path(model_dir).iterdir()} >= MODEL_FILES
    assert (package_file.parent / "py.typed").is_file()


def test_chatstream_serve_from_an_empty_directory_streams_the_bundled_model(venv: Path, tmp_path: Path) -> None:
    command = [str(venv / "bin" / "chatstream"), "serve", "--port", "0", "--temperature", "0", "--max-new-tokens", "40"]
    with subprocess.Popen(command, cwd=tmp_path, env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
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
            with httpx.Client(base_url=match.group(1), timeout=60) as client:
                response = client.post("/chat_stream", json={"user_input": "Hello", "regenerate": False})
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            finally:
                watchdog.cancel()
        stderr = process.stderr.read()
    assert response.status_code == 200, response.text
    chunks = response.text.split(EOS)
    assert len(chunks) > 2 and chunks[-1] == ""
    assert chunks[-2] == "Hello! How can I help you today?"  # the bundled model's greedy answer
    # it exited by itself on Ctrl-C, not by the watchdog or a crash (the exact code is test_cli's business)
    assert process.returncode in (0, 130), stderr
    assert list(tmp_path.iterdir()) == []  # serving wrote nothing into the working directory
