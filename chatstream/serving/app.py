"""Ready-made FastAPI apps around a ChatStream (what ``chatstream serve`` runs).

``create_app(chat_stream)`` serves an existing ChatStream. ``create_app(loader=...)`` starts answering
at once and builds the ChatStream in a worker thread: ``GET /health`` (and every other endpoint) answers
503 until the model is loaded, then the app serves normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import anyio.to_thread
from fastapi import FastAPI

from ..engine.model_loading import load_model as load_model  # its home before engine.model_loading
from .api import append_apis
from .chat_stream import ChatStream
from .client_roles import client_role_chat_page

logger = logging.getLogger("chatstream")


def serve_the_page(chat_stream: ChatStream) -> None:
    """Let browsers load the chat page: roles left at the default become ``client_role_chat_page``."""
    if not chat_stream.client_roles_given:
        chat_stream.set_client_roles(client_role_chat_page)
    elif not chat_stream.client_roles.browser_default.allows("webui_index"):
        logger.warning("the chat page answers 403 to browsers: the default browser role %r does not allow "
                       "'webui_index' (add 'webui_index', 'webui_js' and 'webui_css' to its 'allow' list).",
                       chat_stream.client_roles.browser_default.name)


def create_app(
    chat_stream: ChatStream | None = None,
    *,
    loader: Callable[[], ChatStream] | None = None,
    on_ready: Callable[[ChatStream], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    web_ui_params: dict | None = None,
    api_docs: bool = False,
) -> FastAPI:
    """A FastAPI app with every ChatStream endpoint and the chat page.

    Give either ``chat_stream`` or ``loader`` (called once in a worker thread at startup). ``on_ready``
    runs when the ChatStream serves, ``on_error`` when the loader raised. A ChatStream built without
    ``client_roles`` gets ``client_role_chat_page`` (0.3's default roles plus the page's own files); one
    built with its own roles keeps them (with a warning when they refuse the page to browsers).
    """
    if (chat_stream is None) == (loader is None):
        raise ValueError("give exactly one of `chat_stream` and `loader`.")
    if chat_stream is not None:
        ready = chat_stream

        def loader() -> ChatStream:
            return ready

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def load() -> None:
            try:
                # abandon_on_cancel: stopping the server while a model loads must not wait for the load
                loaded = await anyio.to_thread.run_sync(loader, abandon_on_cancel=True)
                serve_the_page(loaded)
                await loaded.start_queue_worker()
            except Exception as error:
                logger.exception("could not load the model")
                if on_error is not None:
                    on_error(error)
                return
            app.state.chat_stream = loaded
            if on_ready is not None:
                on_ready(loaded)

        task = asyncio.create_task(load())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            loaded = app.state.chat_stream
            app.state.chat_stream = None
            if loaded is not None:
                await loaded.stop_queue_worker()

    docs = {} if api_docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}  # they load CDN scripts
    app = FastAPI(title="ChatStream", lifespan=lifespan, **docs)
    app.state.chat_stream = None
    append_apis(lambda: app.state.chat_stream, app, {"all": True, "web_ui_params": web_ui_params or {}})
    return app
