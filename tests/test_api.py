import json
import logging
import re

import httpx
import pytest
from fastapi import FastAPI
from itsdangerous import TimestampSigner
from starlette.applications import Starlette

from chatstream.serving.api import (
    API_NAMES,
    API_ROUTES,
    DefaultApiPaths,
    append_apis,
    enabled_api_names,
    to_web_api_path,
)
from chatstream.serving.chat_stream import ChatStream
from chatstream.serving.client_roles import client_role_chat_page, client_role_free_access
from chatstream.serving.sessions import SESSION_COOKIE_NAME, MemorySessionStore


def routes_of(app):
    return {(route.path, method) for route in app.routes for method in getattr(route, "methods", None) or ()
            if route.path in {p for _, p, _ in API_ROUTES.values()}}


def test_include_exclude_all_pick_the_endpoints():
    assert enabled_api_names({"all": True}) == list(API_NAMES)
    assert enabled_api_names({"include": ["get_load", "chat_stream"]}) == ["chat_stream", "get_load"]
    assert "set_feedback" not in enabled_api_names({"exclude": ["set_feedback"]})
    assert enabled_api_names({}) == enabled_api_names(None) == []
    with pytest.raises(ValueError, match="only one of"):
        enabled_api_names({"all": True, "exclude": []})
    with pytest.raises(ValueError, match="unknown API"):
        enabled_api_names({"include": ["chat"]})


def test_paths_and_methods_follow_03():
    assert to_web_api_path("chat_stream") == DefaultApiPaths.CHAT_STREAM == "/chat_stream"
    assert to_web_api_path("webui_index") == "/" and to_web_api_path("webui_js") == "/chatstream.js"
    app = FastAPI()
    ChatStream(use_mock_response=True).append_apis(app, {"all": True})
    assert {("/chat_stream", "POST"), ("/clear_context", "POST"), ("/get_load", "GET"), ("/health", "GET"),
            ("/", "GET"), ("/chatstream.js", "GET"), ("/chatstream.css", "GET")} <= routes_of(app)
    with pytest.raises(ValueError):
        to_web_api_path("nope")


def test_nothing_enabled_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="chatstream"):
        assert ChatStream(use_mock_response=True).append_apis(FastAPI(), {"web_ui_params": {}}) == []
    assert "added no endpoint" in caplog.text


async def asgi_client(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_web_ui_page_embeds_params_safely_and_serves_assets_from_the_package():
    chat_stream = ChatStream(use_mock_response=True, session_secret="0123456789abcdef-x",
                             client_roles=client_role_chat_page)
    app = FastAPI()
    params = {"welcomeMessage": "</script><script>alert(1)</script>", "style_opts": {"label_input_placeholder": "Ask"}}
    chat_stream.append_apis(app, {"all": True, "web_ui_params": params})
    async with await asgi_client(app) as client:
        page = await client.get("/")
        js = await client.get("/chatstream.js")
        css = await client.get("/chatstream.css")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    config = re.search(r'<script id="chatstream-config" type="application/json">(.*?)</script>', page.text).group(1)
    assert "</script>" not in config and json.loads(config) == params
    assert 'src="chatstream.js"' in page.text and "http" not in page.text.replace("https:", "")
    assert js.headers["content-type"].startswith("text/javascript") and "<::EOS::>" in js.text
    assert css.headers["content-type"].startswith("text/css")


async def test_plain_starlette_app_and_a_loading_getter():
    app = Starlette()
    state = {"chat_stream": None}
    append_apis(lambda: state["chat_stream"], app, {"include": ["health", "get_load"]})
    async with await asgi_client(app) as client:
        loading = await client.get("/get_load")
        assert loading.status_code == 503 and loading.json()["error"] == "not_ready"
        chat_stream = ChatStream(use_mock_response=True, client_roles=client_role_free_access)
        await chat_stream.start_queue_worker()
        state["chat_stream"] = chat_stream
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/get_load")).json()["success"] is True


async def test_append_middlewares_passes_session_settings_and_adds_cors_in_develop_mode(caplog):
    chat_stream = ChatStream(use_mock_response=True)
    app = FastAPI()
    store = MemorySessionStore()
    secret = "the app's own session secret"
    chat_stream.append_middlewares(app, {"fast_session": {"secret_key": secret, "store": store, "secure": True},
                                         "develop_mode": True})
    chat_stream.append_apis(app, {"all": True})
    await chat_stream.start_queue_worker()
    async with await asgi_client(app) as client:
        response = await client.post("/chat_stream", json={"user_input": "hi"},
                                     headers={"Origin": "http://localhost:3000"})
    cookie = response.headers["set-cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie
    session_id = TimestampSigner(secret, salt="chatstream.session").unsign(response.cookies[SESSION_COOKIE_NAME])
    assert len(store) == 1 and await store.load(session_id.decode()) is not None
    assert response.headers["access-control-allow-origin"] == "*"
    assert "X-ChatStream-Last-Generated-Message-Id" in response.headers["access-control-expose-headers"]

    class FastSessionLikeStore:  # what 0.3 apps passed (fastsession.MemoryStore)
        pass

    with caplog.at_level(logging.WARNING, logger="chatstream"):
        ChatStream(use_mock_response=True).append_middlewares(FastAPI(), {"fast_session": {
            "secret_key": secret, "store": FastSessionLikeStore()}})
    assert "not a chatstream SessionStore" in caplog.text
