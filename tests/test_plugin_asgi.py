"""pytest_chatstream._asgi: an httpx client on an ASGI app with its lifespan run around it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pytest_chatstream import asgi_client, lifespan
from pytest_chatstream._asgi import LifespanError


def _app(events: list[str], fail_startup: bool = False) -> Starlette:
    @asynccontextmanager
    async def app_lifespan(app: Starlette) -> AsyncIterator[dict]:
        events.append("startup")
        if fail_startup:
            raise RuntimeError("no model here")
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        async with anyio.create_task_group() as group:  # a task group spans startup..shutdown
            group.start_soon(tick)
            yield {"greeting": "hello", "ticks": lambda: ticks}
            group.cancel_scope.cancel()
        events.append("shutdown")

    async def state(request: Request) -> JSONResponse:
        return JSONResponse({"greeting": request.state.greeting, "ticking": request.state.ticks() > 0})

    return Starlette(routes=[Route("/state", state)], lifespan=app_lifespan)


async def test_client_runs_startup_before_and_shutdown_after() -> None:
    events: list[str] = []
    async with asgi_client(_app(events)) as client:
        assert events == ["startup"]
        await asyncio.sleep(0.01)
        response = await client.get("/state")
        assert response.json() == {"greeting": "hello", "ticking": True}
    assert events == ["startup", "shutdown"]


@pytest.fixture
async def client_in_fixture() -> AsyncIterator[tuple[object, list[str]]]:
    events: list[str] = []
    async with asgi_client(_app(events)) as client:
        yield client, events
    assert events == ["startup", "shutdown"]


async def test_lifespan_may_be_entered_and_exited_in_different_tasks(client_in_fixture) -> None:
    client, events = client_in_fixture
    assert (await client.get("/state")).status_code == 200
    assert events == ["startup"]


async def test_failed_startup_raises_with_the_apps_message() -> None:
    with pytest.raises(LifespanError, match=r"startup failed: .*no model here"):
        async with lifespan(_app([], fail_startup=True)):
            pass


async def test_app_without_lifespan_support_still_gets_a_client() -> None:
    async def bare(scope, receive, send):  # answers http only; returns at once on lifespan
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with asgi_client(bare) as client:
        assert (await client.get("/")).status_code == 204
