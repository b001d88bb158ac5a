"""A small project using the pytest_chatstream plugin, for pytester tests of the plugin.

Its tests stream chats from the bundled tiny model (through a copy of it, so a test may delete it)
and save the streamed bytes under ``out/``, so a recorded run and a replayed one can be compared.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

# pytester's in-process runs drop the modules first imported inside them, and torch and
# transformers cannot be imported twice in one process: import what the plugin's fixtures import
# out here, once, before any run.
import fastapi  # noqa: F401
import pytest
import transformers  # noqa: F401
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: F401

from chatstream.bundled import bundled_model_path

# pytest-benchmark, when installed, warns under xdist, and warnings are errors in this repo.
XDIST = ["-n", "2", "-p", "no:benchmark"]
DIST_PARAMS = pytest.mark.parametrize("dist", [[], XDIST], ids=["plain", "xdist"])

ASYNCIO_INI = """\
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""
INI = "[pytest]\n" + ASYNCIO_INI + """\
chatstream_model_path = model
filterwarnings =
    error
    ignore::DeprecationWarning:transformers.*
    ignore::FutureWarning:transformers.*
"""

CONFTEST = """\
import pytest
import torch


@pytest.fixture
def chatstream_config():
    return {"seed": 7, "max_new_tokens": 16, "temperature": 0.9}


def save(request, body: bytes) -> None:
    out = request.config.rootpath / "out"
    out.mkdir(exist_ok=True)
    (out / request.node.name).write_bytes(body)


@pytest.fixture
def saved(request):
    return lambda body: save(request, body)


def pytest_sessionfinish(session):
    assert not torch.cuda.is_initialized(), "a test touched a CUDA device"
"""

CHAT_TESTS = """\
import json


def ask(text, regenerate=False):
    return {"user_input": text, "regenerate": regenerate}


async def test_greeting(chatstream_client, saved):
    response = await chatstream_client.post("/chat_stream", json=ask("Hello"))
    assert response.status_code == 200
    assert response.text.endswith("<::EOS::>")
    saved(response.content)


async def test_two_turns(chatstream_client, saved):
    first = await chatstream_client.post("/chat_stream", json=ask("What is your name?"))
    second = await chatstream_client.post("/chat_stream", json=ask("Thank you"))
    saved(first.content + b"|" + second.content)


def test_sync_client(chatstream_sync_client, saved):
    response = chatstream_sync_client.post("/chat_stream", json=ask("こんにちは"))
    assert response.status_code == 200
    saved(response.content)


async def test_chat_stream_direct(chat_stream, saved):
    texts = [text async for text, _, _ in chat_stream.handle_console_input("Do you like cats?")]
    saved(json.dumps(texts).encode())
"""


SHARED_TESTS = """\
import pytest

ASK = {"user_input": "Hello", "regenerate": False}


@pytest.mark.chatstream_cassette("shared/greeting")
async def test_first(chatstream_client, saved):
    saved((await chatstream_client.post("/chat_stream", json=ASK)).content)


@pytest.mark.chatstream_cassette("shared/greeting")
def test_second(chatstream_sync_client, saved):
    saved(chatstream_sync_client.post("/chat_stream", json=ASK).content)
"""


def make_chat_project(
    pytester: pytest.Pytester, tests: str = CHAT_TESTS, ini_extra: str = "", asyncio: bool = True
) -> Path:
    """Write the project into pytester's directory (model copy, ini, conftest, tests); returns it.

    ``asyncio=False`` leaves pytest-asyncio's options out (for runs with ``-p no:asyncio``).
    """
    shutil.copytree(bundled_model_path(), pytester.path / "model")
    pytester.makeini((INI if asyncio else INI.replace(ASYNCIO_INI, "")) + ini_extra)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_chat=tests)
    return pytester.path


def outputs(project: Path, clear: bool = True) -> dict[str, bytes]:
    """The bytes each test saved, by test name; ``clear`` empties ``out/`` for the next run."""
    out = project / "out"
    saved = {p.name: p.read_bytes() for p in sorted(out.iterdir())} if out.is_dir() else {}
    if clear and out.is_dir():
        shutil.rmtree(out)
    return saved


def cassette_bytes(cassette_dir: Path) -> dict[str, bytes]:
    """Every file under the cassette directory, by relative path."""
    return {p.relative_to(cassette_dir).as_posix(): p.read_bytes()
            for p in sorted(cassette_dir.rglob("*")) if p.is_file()}


def alter_first_token(cassette: Path, token: int) -> None:
    """Make the cassette claim its first sampled token was ``token`` (a forged divergence)."""
    segment = sorted(cassette.glob("segment-*.json"))[0]
    document = json.loads(segment.read_text())
    document["samples"][0]["tok"] = token
    segment.write_text(json.dumps(document))
