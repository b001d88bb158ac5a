"""What the fixtures build on the test's model: ChatStreams (``chatstream_factory``), the app they serve when a
project does not override ``chatstream_app``, and the OpenAI and starlette clients on an app."""

from __future__ import annotations

import secrets
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

DEFAULT_API_KEY = "chatstream-test"  # for an app whose OpenAI API asks for no key


def chat_stream_factory(model: Any, tokenizer: Any, token_sampler: Any, device: str,
                        config: dict) -> Callable[..., Any]:
    """``build(**overrides)``: a ChatStream with ``config``'s arguments (``overrides`` win over them) on
    ``model``, ``tokenizer``, ``token_sampler`` and ``device``, which no override replaces."""
    from chatstream.serving.chat_stream import ChatStream

    def build(**overrides: Any) -> Any:
        kwargs = {**config, **overrides}
        kwargs.update(model=model, tokenizer=tokenizer, token_sampler=token_sampler, device=device)
        return ChatStream(**kwargs)

    return build


def default_app(stream: Any) -> Any:
    """A FastAPI app serving ``stream`` (a ChatStream): its lifespan, a session middleware with a fresh secret,
    and every standard route; ``app.state.chat_stream`` is ``stream``."""
    from fastapi import FastAPI

    app = FastAPI(lifespan=stream.lifespan)
    app.state.chat_stream = stream
    stream.append_middlewares(app, {"fast_session": {"secret_key": secrets.token_urlsafe(16)}})
    stream.append_apis(app, {"all": True})
    return app


def openai_api_key(app: Any) -> str:
    """The API key that ``app``'s OpenAI API (``app.state.chat_stream.openai``) expects, else a placeholder."""
    stream = getattr(getattr(app, "state", None), "chat_stream", None)
    context = getattr(getattr(stream, "openai", None), "context", None)
    return getattr(context, "api_key", None) or DEFAULT_API_KEY


@asynccontextmanager
async def openai_client(app: Any) -> AsyncIterator[Any]:
    """An ``openai.AsyncOpenAI`` client on ``app``'s /v1 API through ASGITransport, inside the app's lifespan,
    with the key the app expects (needs ``openai``)."""
    import openai

    from ._asgi import asgi_client

    async with asgi_client(app) as http_client:
        base_url = str(http_client.base_url).rstrip("/") + "/v1"
        async with openai.AsyncOpenAI(api_key=openai_api_key(app), base_url=base_url, http_client=http_client,
                                      max_retries=0) as client:
            yield client


@contextmanager
def sync_client(app: Any) -> Iterator[Any]:
    """A starlette ``TestClient`` on ``app``, inside the app's lifespan."""
    with warnings.catch_warnings():
        # starlette < 1.8 names anyio.abc.BlockingPortal when imported, which newer anyio deprecates: not
        # the user's code, so it must not fail a suite that turns warnings into errors.
        warnings.filterwarnings("ignore", "The anyio.abc.BlockingPortal alias is deprecated", DeprecationWarning)
        from starlette.testclient import TestClient

    with TestClient(app) as client:
        yield client
