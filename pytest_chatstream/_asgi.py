"""An httpx client on an ASGI app in the same process, with the app's lifespan run around it.

httpx's ``ASGITransport`` sends requests only, never the lifespan events that start an app's
background work (ChatStream's queue worker). :func:`lifespan` sends them itself, running the app's
lifespan in a task of its own, so it may be entered and exited from different tasks (pytest-asyncio
sets fixtures up and tears them down in different tasks) and may hold task groups of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

ASGIApp = Any


class LifespanError(RuntimeError):
    """The app's lifespan startup or shutdown failed."""


@asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[dict]:
    """Run ``app``'s startup on entry and its shutdown on exit; yields the lifespan state dict."""
    to_app: asyncio.Queue[dict] = asyncio.Queue()
    from_app: asyncio.Queue[dict] = asyncio.Queue()
    state: dict = {}
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
    task = asyncio.create_task(app(scope, to_app.get, from_app.put))

    async def reply(event: str) -> dict | None:
        await to_app.put({"type": f"lifespan.{event}"})
        getter = asyncio.ensure_future(from_app.get())
        await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            message = getter.result()
            if message["type"] == f"lifespan.{event}.failed":
                (outcome,) = await asyncio.gather(task, return_exceptions=True)  # starlette re-raises too
                cause = outcome if isinstance(outcome, Exception) else None
                detail = repr(cause) if cause is not None else message.get("message", "")
                raise LifespanError(f"the app's lifespan {event} failed: {detail}") from cause
            return message
        getter.cancel()
        task.result()  # the app raised: let it through
        return None  # the app returned without answering: it has no lifespan

    if await reply("startup") is None:
        yield state
        return
    try:
        yield state
    finally:
        await reply("shutdown")
        await task


def _with_state(app: ASGIApp, state: dict) -> ASGIApp:
    """``app`` with the lifespan state in each request's scope, as an ASGI server would put it."""

    async def wrapped(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and "state" not in scope:
            scope = {**scope, "state": dict(state)}
        await app(scope, receive, send)

    return wrapped


@asynccontextmanager
async def asgi_client(
    app: ASGIApp, base_url: str = "http://testserver", **client_kwargs: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` on ``app`` through ``ASGITransport``, inside the app's lifespan."""
    async with lifespan(app) as state:
        transport = httpx.ASGITransport(app=_with_state(app, state))
        async with httpx.AsyncClient(transport=transport, base_url=base_url, **client_kwargs) as client:
            yield client
