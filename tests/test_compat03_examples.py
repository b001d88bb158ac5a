"""ChatStream 0.3's README app and examples (``examples/compat03/``, copied from 0.3.0 with only the model
path and the device changed) run on this ChatStream with the bundled tiny model: a stream over HTTP
through 0.3's FastSessionMiddleware, the finish callback reading ``get_session()["chat_prompt"]``, a
console turn, the web page routes, roles and feedback.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
from pathlib import Path

import pytest
from starlette.testclient import TestClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "compat03"
EOS = "<::EOS::>"

pytestmark = [
    # 0.3's examples use FastAPI's on_event("startup"), deprecated since
    pytest.mark.filterwarnings("ignore:\\s*on_event is deprecated:DeprecationWarning"),
]


@pytest.fixture
def load(monkeypatch, tmp_path):
    """Import one example module from its file (LoadTime keeps its timings under a temporary HOME)."""
    monkeypatch.setenv("HOME", str(tmp_path))

    def load_example(name: str):
        spec = importlib.util.spec_from_file_location(f"compat03_{name}", EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load_example


def chunks_of(text: str) -> list[str]:
    parts = text.split(EOS)
    assert parts[-1] == "", f"the stream must end with {EOS}: {text[-40:]!r}"
    parts = parts[:-1]
    assert parts and all(later.startswith(earlier) for earlier, later in itertools.pairwise(parts))
    return parts


def fastsession_data(app, client: TestClient) -> dict:
    """The session dict FastSessionMiddleware keeps for the client's ``sid`` cookie."""
    from fastsession import FastSessionMiddleware

    middleware = next(m for m in app.user_middleware if m.cls is FastSessionMiddleware)
    store = middleware.kwargs["store"]
    sessions = [entry["store"] for entry in store.raw_memory_store.values() if "chat_prompt" in entry["store"]]
    assert len(sessions) == 1, "one client, one session"
    assert "sid" in client.cookies
    return sessions[0]


def test_readme_app_streams_and_keeps_the_history_in_fastsession(load):
    module = load("readme_app")
    with TestClient(module.app, base_url="http://testserver") as client:
        first = client.post("/chat_stream", json={"user_input": "Hello", "regenerate": False})
        assert first.status_code == 200
        answer = chunks_of(first.text)[-1]
        assert "chatstream_session" not in client.cookies, "the app's session middleware is the session"
        second = client.post("/chat_stream", json={"user_input": "Thank you", "regenerate": False})
        assert second.status_code == 200
        prompt = fastsession_data(module.app, client)["chat_prompt"]
    assert prompt.create_prompt({"omit_last_message": True}) == (
        f"<human>: Hello\n<bot>: {answer}\n<human>: Thank you\n<bot>:")


def test_callback_reads_chat_prompt_from_the_fastsession(load, capsys):
    module = load("web_server_rinna_dev")
    with TestClient(module.app, base_url="http://testserver") as client:
        response = client.post("/chat_stream", json={"user_input": "Hello", "regenerate": False})
        answer = chunks_of(response.text)[-1]
        printed = capsys.readouterr().out
        assert f"Prompt:'ユーザー: Hello<NL>システム: {answer}<NL>'" in printed
        # 0.3's default roles: browsers may chat, clear the context and send feedback, nothing else
        assert client.get("/get_prompt").status_code == 403
        assert client.get("/get_generation_params").status_code == 403
        assert client.post("/clear_context").json()["success"] is True
    params = module.chat_stream.params
    assert params["temperature"] == 0.7 and params["top_k_value"] == 10


def test_set_seed_in_the_app_makes_sampling_reproducible(load):
    answers = []
    for _ in range(2):
        module = load("web_server_rinna_dev")  # calls transformers.set_seed(42) after building ChatStream
        with TestClient(module.app, base_url="http://testserver") as client:
            answers.append(client.post("/chat_stream", json={"user_input": "Hello", "regenerate": False}).text)
    assert answers[0] == answers[1]


def test_edit_request_app_sends_regenerate_as_a_string(load, capsys):
    module = load("web_server_edit_request")
    with TestClient(module.app, base_url="http://testserver") as client:
        response = client.post("/chat_stream", json={"user_input": "Hello", "regenerate": "False"})
        assert response.status_code == 200
        answer = chunks_of(response.text)[-1]
        printed = capsys.readouterr().out
        assert "user_input:Hello regenerate:False" in printed
        assert f"<human>: Hello\n<bot>: {answer}\n" in printed  # the callback's chat_prompt.create_prompt()
        assert client.post("/clear_context").json() == {"success": True}


def test_web_server_redpajama_simple_over_https(load):
    module = load("web_server_redpajama_simple")  # secure=True: the sid cookie is sent over https only
    with TestClient(module.app, base_url="https://testserver") as client:
        first = chunks_of(client.post("/chat_stream", json={"user_input": "Hello", "regenerate": False}).text)[-1]
        again = client.post("/chat_stream", json={"user_input": "", "regenerate": True})
        assert again.status_code == 200
        prompt = fastsession_data(module.app, client)["chat_prompt"]
    assert prompt.get_contents()[0].get_message() == "Hello"
    assert len(prompt.get_contents()) == 2, f"regenerate replaced the answer {first!r}, it added no turn"


def test_mock_dev_auto_page_roles_and_feedback(load, capsys):
    module = load("web_server_mock_dev_auto")
    with TestClient(module.app, base_url="http://testserver") as client:
        # the example's "user" role does not allow webui_index: 403, as in 0.3
        assert client.get("/").status_code == 403
        response = client.post("/chat_stream", json={"user_input": "hi", "regenerate": False})
        assert response.status_code == 200 and response.text.endswith(EOS)
        message_id = response.headers["X-ChatStream-Last-Generated-Message-Id"]
        assert client.get("/get_prompt").status_code == 403, "the default 'user' role may not read the prompt"
        promoted = client.post("/chat_stream", json={"user_input": "admin mode", "regenerate": False})
        assert promoted.headers["X-ChatStream-API-DevTool-Enabled"]
        assert client.get("/get_prompt").json()["success"] is True
        page = client.get("/")  # admin: allow "all"
        assert page.status_code == 200 and "ようこそ" in page.text and "icon_human_00.png" in page.text
        assert client.get("/chatstream.js").status_code == 200
        feedback = client.post("/set_feedback", json={"message_id": message_id, "is_like": True})
        assert feedback.json()["success"] is True
    printed = capsys.readouterr().out
    assert "フィードバックを受信しました" in printed and "'is_like': True" in printed
    assert f"'target_message_id': '{message_id}'" in printed


def test_mock_simple_page_routes_called_without_await(load):
    module = load("web_server_mock_simple")  # def index(response): return chat_stream.index(response, ...)
    with TestClient(module.app, base_url="http://testserver") as client:
        page = client.get("/")
        assert page.status_code == 200 and "メッセージを入力してください" in page.text
        assert "javascript" in client.get("/chatstream.js").headers["content-type"]


@pytest.mark.parametrize("name", ["console_chat_rinna", "console_chat_redpajama", "console_chat_mock"])
def test_console_chat_turn(load, monkeypatch, capsys, name):
    module = load(name)
    typed = iter(["Hello", "exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(typed))
    capsys.readouterr()  # LoadTime's progress line
    asyncio.run(module.console_chat_main())
    out = capsys.readouterr().out
    conversation = module.chat_stream.chat_prompt_for_single_user_on_console
    assert conversation.get_requester_last_msg() == "Hello"
    answer = conversation.get_responder_last_msg()
    if name == "console_chat_rinna":  # the tiny model, sampled at temperature 1.0 in rinna's format, ends at once
        assert out == "\n" and answer == "", "an empty answer is a finished turn, as in 0.3"
    else:
        assert answer and out == f"AI : {answer}\n"
