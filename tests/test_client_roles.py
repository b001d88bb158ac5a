import hashlib
import logging

import httpx
import pytest
from fastapi import FastAPI

from chatstream.exceptions import ConfigurationError
from chatstream.serving.chat_stream import ChatStream
from chatstream.serving.client_roles import AUTH_HEADER, ClientRoles, client_role_free_access, phrase_matches

ADMIN_PHRASE = "open sesame 42"
SERVER_PHRASE = "i am the batch job"

ROLES_03 = {  # the 0.3 example's role set, with one sha256 role added
    "user": {"apis": {"allow": ["chat_stream", "clear_context", "set_feedback"], "auth_method": "nothing",
                      "use_session": True}},
    "admin": {"apis": {"allow": "all", "auth_method": "ui_pass_phrase", "ui_pass_phrase": ADMIN_PHRASE,
                       "use_session": True, "enable_dev_tool": True}},
    "server_default": {"apis": {"allow": ["get_load"], "auth_method": "nothing", "use_session": False}},
    "server_admin": {"apis": {"allow": "all", "auth_method": "header_phrase_sha256",
                              "header_phrase": hashlib.sha256(SERVER_PHRASE.encode()).hexdigest(),
                              "use_session": False}},
}


async def roles_app(client_roles):
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"}, client_roles=client_roles,
                             session_secret="0123456789abcdef-test")
    app = FastAPI()
    chat_stream.append_apis(app, {"all": True})
    await chat_stream.start_queue_worker()
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_free_access_is_the_default_and_allows_every_api():
    assert ClientRoles(None).browser_default.allow == "all"
    async with await roles_app(None) as client:
        for path in ("/get_load", "/get_resource_usage", "/get_generation_params", "/", "/chatstream.js"):
            assert (await client.get(path)).status_code == 200, path
        assert (await client.get("/get_load", headers={"X-FastSession-Skip": "skip"})).status_code == 200
        assert (await client.post("/chat_stream", json={"user_input": "hi"})).status_code == 200


async def test_browser_default_role_is_limited_until_the_pass_phrase_is_typed(caplog):
    async with await roles_app(ROLES_03) as client:
        denied = await client.get("/get_load")
        assert denied.status_code == 403 and denied.json()["error"] == "forbidden"
        assert (await client.post("/chat_stream", json={"user_input": "hello"})).status_code == 200
        with caplog.at_level(logging.DEBUG, logger="chatstream"):
            promoted = await client.post("/chat_stream", json={"user_input": ADMIN_PHRASE})
        assert promoted.status_code == 200 and "'admin'" in promoted.text
        assert promoted.headers["X-ChatStream-API-DevTool-Enabled"] == "true"
        assert (await client.get("/get_load")).status_code == 200
        history = (await client.get("/get_prompt")).json()["history"]["chat_contents"]
        assert [c["message"] for c in history] == ["hello", "hello"], "the phrase is not part of the chat"
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "admin" in logged and ADMIN_PHRASE not in logged


async def test_agents_get_their_default_role_or_the_header_role():
    async with await roles_app(ROLES_03) as client:
        client.cookies.clear()
        skip = {"X-FastSession-Skip": "skip"}
        assert (await client.get("/get_load", headers=skip)).status_code == 200
        assert (await client.post("/chat_stream", json={"user_input": "x"}, headers=skip)).status_code == 403
        wrong = {AUTH_HEADER: SERVER_PHRASE + "!"}
        assert (await client.post("/chat_stream", json={"user_input": "x"}, headers=wrong)).status_code == 403
        right = {AUTH_HEADER: SERVER_PHRASE}
        response = await client.post("/chat_stream", json={"user_input": "x y"}, headers=right)
        assert response.status_code == 200 and response.text.endswith("x y<::EOS::>")
        assert "set-cookie" not in response.headers, "agents have no session"
        worker = (await client.get("/get_load", headers=right)).json()["chatstream_workers"][0]
        assert (worker["running"], worker["waiting"]) == (0, 0), "refused requests hold no place"


def test_phrase_comparison():
    roles = ClientRoles(ROLES_03)
    admin, server_admin = roles.roles["admin"], roles.roles["server_admin"]
    assert phrase_matches(ADMIN_PHRASE, admin)
    assert not phrase_matches(ADMIN_PHRASE + " ", admin) and not phrase_matches("", admin)
    assert not phrase_matches(None, admin)
    assert phrase_matches(SERVER_PHRASE, server_admin)
    assert not phrase_matches(server_admin.phrase, server_admin), "the digest itself is not the phrase"
    assert roles.role_for_phrase(ADMIN_PHRASE) is admin and roles.role_for_phrase("hello") is None
    assert ADMIN_PHRASE not in repr(admin) and ADMIN_PHRASE not in str(admin.to_dict())


@pytest.mark.parametrize(
    ("roles", "match"),
    [
        ({"user": {"apis": {"allow": ["chat_stream", "fly"], "use_session": True}}}, "unknown API"),
        ({"user": {"apis": {"allow": "everything", "use_session": True}}}, "'all' or a list"),
        ({"user": {"apis": {"allow": "all", "auth_method": "password", "use_session": True}}}, "auth_method"),
        ({"u": {"apis": {"allow": "all", "auth_method": "header_phrase", "header_phrase": "x", "use_session": True}}},
         "auth_method"),
        ({"agent": {"apis": {"allow": "all", "use_session": False}}}, "browser default role"),
        ({**client_role_free_access, "x": {"apis": {"allow": "all", "auth_method": "ui_pass_phrase",
                                                    "use_session": True}}}, "ui_pass_phrase"),
        ({**client_role_free_access, "x": {"apis": {"allow": "all", "auth_method": "header_phrase_sha256",
                                                    "header_phrase": "not-hex", "use_session": False}}}, "sha256"),
        ({}, "non-empty"),
    ],
)
def test_bad_role_definitions_are_refused(roles, match):
    with pytest.raises(ConfigurationError, match=match):
        ClientRoles(roles)
