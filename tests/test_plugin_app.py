"""pytest_chatstream._app: the ChatStreams, the default app and the OpenAI client's key the fixtures build."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pytest_chatstream._app import (
    DEFAULT_API_KEY,
    chat_stream_factory,
    default_app,
    openai_api_key,
    openai_client,
    sync_client,
)


class FakeStream:
    """What default_app asks of a ChatStream: its lifespan, middlewares and APIs."""

    def __init__(self) -> None:
        self.middlewares: list[dict] = []
        self.apis: list[dict] = []

    def lifespan(self, app: Any) -> Any:
        raise AssertionError("not started here")

    def append_middlewares(self, app: Any, options: dict) -> None:
        self.middlewares.append(options)

    def append_apis(self, app: Any, options: dict) -> None:
        self.apis.append(options)


def test_the_default_app_serves_the_stream_with_a_fresh_session_secret() -> None:
    first, second = FakeStream(), FakeStream()
    app = default_app(first)
    default_app(second)
    assert app.state.chat_stream is first and app.router.lifespan_context is not None
    assert first.apis == [{"all": True}]
    secret = first.middlewares[0]["fast_session"]["secret_key"]
    assert len(secret) >= 16 and secret != second.middlewares[0]["fast_session"]["secret_key"]


def test_the_openai_client_sends_the_apps_key_else_a_placeholder() -> None:
    keyed = SimpleNamespace(state=SimpleNamespace(chat_stream=SimpleNamespace(
        openai=SimpleNamespace(context=SimpleNamespace(api_key="sk-app")))))
    assert openai_api_key(keyed) == "sk-app"
    unkeyed = SimpleNamespace(state=SimpleNamespace(chat_stream=SimpleNamespace(
        openai=SimpleNamespace(context=SimpleNamespace(api_key=None)))))
    assert openai_api_key(unkeyed) == DEFAULT_API_KEY == "chatstream-test"
    assert openai_api_key(object()) == DEFAULT_API_KEY  # a project's own app, not ChatStream's


def test_the_factory_keeps_the_tests_model_whatever_the_overrides(monkeypatch) -> None:
    import chatstream.serving.chat_stream as chat_stream

    built: list[dict] = []
    monkeypatch.setattr(chat_stream, "ChatStream", lambda **kwargs: built.append(kwargs) or kwargs)
    build = chat_stream_factory("model", "tokenizer", "sampler", "cpu", {"seed": 0, "max_new_tokens": 8})
    build(max_new_tokens=4, model="other")
    assert built == [{"seed": 0, "max_new_tokens": 4, "model": "model", "tokenizer": "tokenizer",
                      "token_sampler": "sampler", "device": "cpu"}]


def _models_app(events: list[str]) -> Starlette:
    """An app with a lifespan and OpenAI's model list, answering with the key it was sent."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    async def models(request: Request) -> JSONResponse:
        key = request.headers.get("authorization", "")
        return JSONResponse({"object": "list", "data": [{"id": key, "object": "model", "created": 0,
                                                         "owned_by": "test"}]})

    app = Starlette(routes=[Route("/v1/models", models)], lifespan=lifespan)
    app.state.chat_stream = SimpleNamespace(openai=SimpleNamespace(context=SimpleNamespace(api_key="sk-app")))
    return app


async def test_the_openai_client_talks_to_the_apps_v1_api_inside_its_lifespan() -> None:
    events: list[str] = []
    async with openai_client(_models_app(events)) as client:
        assert events == ["startup"]
        models = await client.models.list()
    assert [m.id for m in models.data] == ["Bearer sk-app"] and events == ["startup", "shutdown"]


def test_the_sync_client_runs_the_apps_lifespan_around_it() -> None:
    events: list[str] = []
    with sync_client(_models_app(events)) as client:
        assert events == ["startup"]
        assert client.get("/v1/models", headers={"authorization": "k"}).json()["data"][0]["id"] == "k"
    assert events == ["startup", "shutdown"]
