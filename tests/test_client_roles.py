import hashlib
import logging

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request

from chatstream.exceptions import ConfigurationError
from chatstream.serving.app import serve_the_page
from chatstream.serving.chat_stream import ChatStream
from chatstream.serving.client_roles import (
    AUTH_HEADER,
    ClientRoles,
    client_role_chat_page,
    client_role_default,
    client_role_free_access,
    phrase_matches,
)

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


async def test_the_default_is_03s_browsers_chat_clear_and_send_feedback_agents_nothing():
    roles = ClientRoles(None)
    assert roles.definitions is client_role_default and roles.agent_default is None
    assert roles.browser_default.to_dict() == {
        "client_role_name": "user", "allowed_apis": ["chat_stream", "clear_context", "set_feedback"],
        "enable_dev_tool": False}
    async with await roles_app(None) as client:
        response = await client.post("/chat_stream", json={"user_input": "hi"})
        assert response.status_code == 200 and response.text.endswith("hi<::EOS::>")
        feedback = await client.post("/set_feedback", json={"message_id": response.headers[
            "X-ChatStream-Last-Generated-Message-Id"], "is_like": True})
        assert feedback.json()["success"] is True
        assert (await client.post("/clear_context")).status_code == 200
        for path in ("/get_prompt", "/get_load", "/get_resource_usage", "/get_generation_params", "/",
                     "/chatstream.js", "/chatstream.css"):
            assert (await client.get(path)).status_code == 403, path
        assert (await client.post("/set_generation_params", json={"temperature": 0.5})).status_code == 403
        agent = {"X-FastSession-Skip": "skip"}
        assert (await client.post("/chat_stream", json={"user_input": "hi"}, headers=agent)).status_code == 403
        assert (await client.get("/health", headers=agent)).status_code == 200


async def test_chat_page_roles_add_the_pages_files_only():
    async with await roles_app(client_role_chat_page) as client:
        for path in ("/", "/chatstream.js", "/chatstream.css"):
            assert (await client.get(path)).status_code == 200, path
        assert (await client.post("/chat_stream", json={"user_input": "hi"})).status_code == 200
        for path in ("/get_prompt", "/get_load", "/get_resource_usage", "/get_generation_params"):
            assert (await client.get(path)).status_code == 403, path


async def test_free_access_allows_every_api():
    assert ClientRoles(client_role_free_access).browser_default.allow == "all"
    async with await roles_app(client_role_free_access) as client:
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
        ({"agent": {"apis": {"allow": "all", "auth_method": "nothing", "use_session": False}}},
         "browser default role"),
        ({"user": {"apis": {"allow": "all", "use_session": True}}}, "browser default role"),  # no auth_method
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


@pytest.mark.parametrize(
    ("name", "apis", "said"),
    [
        ("typo", {"allow": "all", "auth_method": "password", "ui_pass_phrase": "x", "use_session": True}, "'password'"),
        ("header_in_browser", {"allow": "all", "auth_method": "header_phrase", "header_phrase": "x",
                               "use_session": True}, "'header_phrase'"),
        ("ui_in_agent", {"allow": "all", "auth_method": "ui_pass_phrase", "ui_pass_phrase": "x"}, "'ui_pass_phrase'"),
        ("no_method", {"allow": "all", "use_session": False}, "None"),
    ],
)
def test_a_role_whose_auth_method_does_not_fit_is_kept_but_never_granted(name, apis, said, caplog):
    """0.3 accepted these (its tests build some) and then raised on requests; now nobody gets them."""
    with caplog.at_level(logging.WARNING, logger="chatstream"):
        roles = ClientRoles({**ROLES_03, name: {"apis": apis}})
    assert f"client_roles[{name!r}] has auth_method {said}" in caplog.text and "Nobody can get" in caplog.text
    assert name in roles.roles and roles.roles[name].phrase is None
    assert roles.role_for_phrase("x") is None
    agent = Request({"type": "http", "headers": [(AUTH_HEADER.lower().encode(), b"x")]})
    assert roles.agent_role(agent) is roles.agent_default


def test_the_session_may_keep_the_roles_name_or_03s_dict_and_only_a_browser_role_counts():
    roles = ClientRoles(ROLES_03)
    assert roles.browser_role({}) is roles.browser_default
    assert roles.browser_role({"chat_stream_client_role": "admin"}) is roles.roles["admin"]
    kept_03 = {"client_role_name": "admin", "allowed_apis": ["chat_stream"], "enable_dev_tool": False}
    assert roles.browser_role({"chat_stream_client_role": kept_03}).allow == "all", "rights come from the definition"
    for kept in ("server_admin", "nobody", {"client_role_name": 3}, ["admin"]):
        assert roles.browser_role({"chat_stream_client_role": kept}) is roles.browser_default, kept


def test_create_app_gives_a_chat_stream_left_at_the_default_the_pages_roles(caplog):
    default = ChatStream(use_mock_response=True)
    assert default.client_roles.definitions is client_role_default and not default.client_roles_given
    serve_the_page(default)
    assert default.client_roles.definitions is client_role_chat_page
    assert default.client_role_wrapper.roles is default.client_roles
    own = ChatStream(use_mock_response=True, client_roles=ROLES_03)
    with caplog.at_level(logging.WARNING, logger="chatstream"):
        serve_the_page(own)
    assert own.client_roles.definitions is ROLES_03 and "the chat page answers 403" in caplog.text
