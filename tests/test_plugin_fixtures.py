"""The plugin's fixtures, marker and report options, through pytester on the bundled tiny model."""

from __future__ import annotations

import json
import shutil

import pytest
from _chat_project import SHARED_TESTS, make_chat_project, outputs


def test_a_shared_cassette_is_recorded_once_per_run(pytester: pytest.Pytester) -> None:
    project = make_chat_project(pytester, tests=SHARED_TESTS)
    result = pytester.runpytest("--probe")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["replayed: 1 cassette(s)", "recorded: 1 cassette(s), *"])
    live = outputs(project)
    assert live["test_first"] == live["test_second"]
    cassettes = project / "fixtures" / "cassettes"
    assert [p.parent.relative_to(cassettes).as_posix() for p in cassettes.rglob("manifest.json")] == [
        "shared/greeting"
    ]
    assert sorted(p.name for p in (cassettes / "shared").iterdir()) == ["greeting"]

    replayed = pytester.runpytest()
    replayed.assert_outcomes(passed=2)
    assert outputs(project) == live

    verified = pytester.runpytest("--probe=verify")  # the test that recorded it verifies it
    verified.assert_outcomes(passed=2)
    verified.stdout.fnmatch_lines(["replayed: 1 cassette(s)", "verified: 1 test(s): 1 identical"])


DOWNSTREAM_TESTS = """\
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from chatstream.engine.chat_prompt_presets import ChatPromptChatML


class ShoutingPrompt(ChatPromptChatML):
    def build_initial_prompt(self, chat_prompt=None):
        super().build_initial_prompt(chat_prompt)
        self.set_system("You answer briefly.")


@pytest.fixture
def chatstream_config():
    return {"seed": 3, "max_new_tokens": 12, "chat_prompt_clazz": ShoutingPrompt}


@pytest.fixture
def chatstream_app(chatstream_factory):
    stream = chatstream_factory(num_of_concurrent_executions=1)
    app = FastAPI(lifespan=stream.lifespan)

    @app.post("/ask")
    async def ask(request: Request):
        return await stream.handle_chat_stream_request(request)

    @app.get("/limits")
    async def limits():
        return PlainTextResponse(str(stream.admission.max_running))

    return app


async def test_own_route(chatstream_client, saved):
    assert (await chatstream_client.get("/limits")).text == "1"
    response = await chatstream_client.post("/ask", json={"user_input": "Hi", "regenerate": False})
    assert response.status_code == 200
    saved(response.content)
"""


def test_a_downstream_app_overrides_chatstream_app_and_config(pytester: pytest.Pytester) -> None:
    project = make_chat_project(pytester, tests=DOWNSTREAM_TESTS)
    pytester.runpytest("--probe").assert_outcomes(passed=1)
    live = outputs(project)
    manifest = json.loads((project / "fixtures/cassettes/test_chat/test_own_route/manifest.json").read_text())
    assert manifest["sampling"]["max_new_tokens"] == 12 and manifest["sampling"]["seed"] == 3
    calls = json.loads(next((project / "fixtures/cassettes/test_chat/test_own_route").glob("segment-*.json"))
                       .read_text())["calls"]
    assert any("You answer briefly." in json.dumps(call["a"]) for call in calls)  # the app's own prompt
    pytester.runpytest().assert_outcomes(passed=1)
    assert outputs(project) == live


ANYIO_TESTS = """\
import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_anyio(chatstream_client, saved):
    response = await chatstream_client.post("/chat_stream", json={"user_input": "Bye", "regenerate": False})
    saved(response.content)
"""


def test_anyio_tests_without_pytest_asyncio(pytester: pytest.Pytester) -> None:
    project = make_chat_project(pytester, tests=ANYIO_TESTS, asyncio=False)
    pytester.runpytest("-p", "no:asyncio", "--probe").assert_outcomes(passed=1)
    live = outputs(project)
    pytester.runpytest("-p", "no:asyncio").assert_outcomes(passed=1)
    assert outputs(project) == live and live["test_anyio"].endswith(b"<::EOS::>")


LIVE_MODEL_OVERRIDE = """\
import pytest
from transformers import AutoTokenizer, LlamaForCausalLM


@pytest.fixture(scope="session")
def chatstream_live_model(pytestconfig):
    (pytestconfig.rootpath / "loaded").write_text("yes")
    path = pytestconfig.rootpath / "model"
    return LlamaForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


async def test_greeting(chatstream_client, chatstream_device, saved):
    assert chatstream_device == "cpu"
    saved((await chatstream_client.post("/chat_stream", json={"user_input": "Hello", "regenerate": False})).content)
"""


def test_chatstream_live_model_is_an_override_point_used_only_under_probe(pytester: pytest.Pytester) -> None:
    project = make_chat_project(pytester, tests=LIVE_MODEL_OVERRIDE)
    pytester.runpytest("--probe", "--probe-device", "cpu").assert_outcomes(passed=1)
    assert (project / "loaded").read_text() == "yes"
    (project / "loaded").unlink()
    pytester.runpytest().assert_outcomes(passed=1)
    assert not (project / "loaded").exists()  # replay never asks for the live model


def test_requesting_the_live_model_in_replay_is_refused(pytester: pytest.Pytester) -> None:
    make_chat_project(pytester, tests="def test_x(chatstream_live_model):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*chatstream_live_model loads the live model, which only a --probe run does*"])


FIDELITY_TESTS = """\
import pytest


@pytest.mark.chatstream_cassette(fidelity="exact")
async def test_exact(chatstream_client):
    await chatstream_client.post("/chat_stream", json={"user_input": "Hello", "regenerate": False})
"""


def test_marker_fidelity_yields_to_the_ini_option(pytester: pytest.Pytester) -> None:
    project = make_chat_project(pytester, tests=FIDELITY_TESTS)
    manifest = project / "fixtures/cassettes/test_chat/test_exact/manifest.json"
    pytester.runpytest("--probe").assert_outcomes(passed=1)
    assert json.loads(manifest.read_text())["fidelity"] == "exact"
    pytester.makeini((project / "tox.ini").read_text() + "\nchatstream_fidelity = fp16\n")
    pytester.runpytest("--probe").assert_outcomes(passed=1)
    assert json.loads(manifest.read_text())["fidelity"] == "fp16"


def test_replay_warns_when_the_local_model_changed_since_recording(pytester: pytest.Pytester) -> None:
    project = make_chat_project(pytester)
    pytester.runpytest("--probe", "-k", "greeting").assert_outcomes(passed=1, deselected=3)
    pytester.runpytest("-k", "greeting").assert_outcomes(passed=1, deselected=3)  # same model: no warning
    (project / "model" / "extra.safetensors").write_bytes(b"new weights")
    result = pytester.runpytest("-k", "greeting")
    result.assert_outcomes(errors=1, deselected=3)  # the project turns warnings into errors
    result.stdout.fnmatch_lines([
        "*StaleCassetteWarning: the cassette */fixtures/cassettes/test_chat/test_greeting is stale: the weights "
        "of */model changed since it was recorded. Re-record it: pytest --probe=all 'test_chat.py::test_greeting'",
    ])


def test_unused_lists_cassettes_no_test_of_the_run_used(pytester: pytest.Pytester) -> None:
    project = make_chat_project(pytester)
    pytester.runpytest("--probe", "-k", "greeting or two_turns").assert_outcomes(passed=2, deselected=2)
    cassettes = project / "fixtures" / "cassettes"
    for orphan in ("test_chat/test_removed", "orphan"):
        shutil.copytree(cassettes / "test_chat" / "test_greeting", cassettes / orphan)

    whole = pytester.runpytest("--chatstream-unused", "-k", "greeting")
    whole.assert_outcomes(passed=1, deselected=3)
    whole.stdout.fnmatch_lines([
        "unused: 2 cassette(s) on disk that no test of this run used", "  orphan", "  test_chat/test_removed",
    ])
    assert "test_two_turns" not in whole.stdout.str().split("unused:")[1]  # deselected, not unused

    partial = pytester.runpytest("--chatstream-unused", "test_chat.py")
    partial.assert_outcomes(passed=2, errors=2)  # two tests have no cassette yet
    partial.stdout.fnmatch_lines(["unused: 1 cassette(s) on disk that no test of this run used",
                                  "  test_chat/test_removed"])
    assert (cassettes / "orphan" / "manifest.json").is_file()  # listed, never deleted


OPENAI_TESTS = """\
import json


async def test_openai_client(chatstream_openai, saved):
    model = (await chatstream_openai.models.list()).data[0].id
    messages = [{"role": "user", "content": "Hello"}]
    reply = await chatstream_openai.chat.completions.create(model=model, messages=messages, logprobs=True,
                                                            top_logprobs=2, max_tokens=8)
    stream = await chatstream_openai.chat.completions.create(model=model, messages=messages, stream=True,
                                                             stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    logprobs = [[t.token, round(t.logprob, 3), [p.token for p in t.top_logprobs]]
                for t in reply.choices[0].logprobs.content]
    saved(json.dumps([reply.choices[0].message.content, reply.usage.model_dump(), logprobs, streamed,
                      chunks[-1].usage.model_dump()]).encode())
"""


def test_chatstream_openai_records_and_replays_through_the_official_client(pytester: pytest.Pytester) -> None:
    project = make_chat_project(pytester, tests=OPENAI_TESTS)
    pytester.runpytest("--probe").assert_outcomes(passed=1)
    live = outputs(project)
    content, usage, logprobs, streamed, stream_usage = json.loads(live["test_openai_client"])
    assert content and streamed and usage["completion_tokens"] <= 8 and stream_usage["completion_tokens"] >= 1
    assert len(logprobs) >= 1 and all(len(top) == 2 for _, _, top in logprobs)
    pytester.runpytest().assert_outcomes(passed=1)
    assert outputs(project) == live, "replayed from the cassette: the same answers, usage and logprobs"
