"""A small FastAPI chat app that embeds ChatStream: a hotel concierge with its own route and prompt.

    python examples/chat_app/concierge.py [--model PATH] [--port 8000]

runs it on the bundled tiny model (or any local HF chat model). Its tests (``tests/``) use only the
pytest_chatstream plugin's public fixtures and replay committed cassettes, so they need no model;
``pytest examples/chat_app --probe`` re-records them from the model in ``pytest.ini``.
"""

from __future__ import annotations

import argparse
import os
import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from chatstream.engine.chat_prompt_presets import ChatPromptChatML
from chatstream.serving.chat_stream import ChatStream

SYSTEM_MESSAGE = "You are the concierge of the Hotel Example. Answer guests briefly and kindly."


class ConciergePrompt(ChatPromptChatML):
    """ChatML with the concierge's system message."""

    def build_initial_prompt(self, chat_prompt: Any = None) -> None:
        super().build_initial_prompt(chat_prompt)
        self.set_system(SYSTEM_MESSAGE)


def build_chat_stream(model: Any, tokenizer: Any, token_sampler: Any = None, device: Any = None,
                      **options: Any) -> ChatStream:
    """The app's ChatStream: its prompt, one generation at a time, short answers."""
    settings = {"num_of_concurrent_executions": 1, "max_queue_size": 4, "max_new_tokens": 32, **options}
    return ChatStream(model=model, tokenizer=tokenizer, token_sampler=token_sampler, device=device,
                      chat_prompt_clazz=ConciergePrompt, too_many_request_as_http_error=True, **settings)


def create_app(chat_stream: ChatStream, session_secret: str | None = None) -> FastAPI:
    """The concierge app on ``chat_stream``: ``POST /concierge/ask``, ``GET /concierge/status``."""
    app = FastAPI(title="Hotel Example concierge", lifespan=chat_stream.lifespan)
    secret = session_secret or os.environ.get("CONCIERGE_SESSION_SECRET") or secrets.token_urlsafe(32)
    chat_stream.append_middlewares(app, {"fast_session": {"secret_key": secret}})

    @app.post("/concierge/ask")
    async def ask(request: Request) -> Any:
        return await chat_stream.handle_chat_stream_request(request)

    @app.get("/concierge/status")
    async def status() -> JSONResponse:
        load = chat_stream.admission.stats()
        return JSONResponse({"open": chat_stream.is_ready, "guests_waiting": load["waiting"],
                             "guests_served_now": load["running"]})

    return app


def main() -> None:  # pragma: no cover - starts a server
    import uvicorn
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chatstream.bundled import bundled_model_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="local HF model directory (default: the bundled tiny model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    path = args.model or bundled_model_path()
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    uvicorn.run(create_app(build_chat_stream(model, tokenizer)), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
