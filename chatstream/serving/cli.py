"""The ``chatstream`` command.

    chatstream serve                      # the bundled tiny model on http://127.0.0.1:8000/
    chatstream serve --model PATH         # a local HF model directory, or a Hub id in the local HF cache
    chatstream serve --mock               # no model: the generator mock
    chatstream chat                       # chat in the terminal (chatstream.serving.console)
    chatstream cassette list DIR          # list / show / diff / verify / prune cassettes (serving.cassette_tool)

``serve`` starts listening at once; the model loads in the background with a progress bar (``GET
/health`` answers 503 until it is ready), then the URL of the chat page is printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ..engine.generation import GenerationParams
from ..engine.model_loading import DTYPES
from ..exceptions import ConfigurationError
from ._cli_options import (
    MODEL_HELP,
    add_sampling_arguments,
    add_stopping_arguments,
    generation_kwargs,
    prompt_class,
)

SECRET_ENV = "CHATSTREAM_SESSION_SECRET"
API_KEY_ENV = "CHATSTREAM_API_KEY"
METRICS_KEY_ENV = "CHATSTREAM_METRICS_KEY"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatstream", description="Stream a causal LM's chat answers over HTTP.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the chat page and the ChatStream API with uvicorn")
    model = serve.add_argument_group("model")
    model.add_argument("--model", help=MODEL_HELP)
    model.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    model.add_argument("--dtype", default="auto", choices=tuple(DTYPES),
                       help="the weights' dtype on the device (default: auto, the checkpoint's own)")
    model.add_argument("--batching", action=argparse.BooleanOptionalAction, default=None,
                       help="batch the running streams' decode steps into one forward (default: when the model "
                            "allows it; see docs/batching.md)")
    model.add_argument("--prefix-cache-mb", type=float, default=None, metavar="MB",
                       help="memory for cached prompt prefixes, reused by later requests (default: 512 on CPU, "
                            "a tenth of a GPU's memory up to 4096; 0 turns it off; see docs/prefix-cache.md)")
    model.add_argument("--mock", action="store_true", help="no model: stream fixed texts (the generator mock)")
    model.add_argument("--mock-type", choices=("round", "long", "echo"), default="round")
    model.add_argument("--mock-time-per-token", type=float, default=0.05, metavar="SEC")
    http = serve.add_argument_group("server")
    http.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    http.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    http.add_argument("--concurrency", type=int, default=2, help="generations run at once (default: 2)")
    http.add_argument("--queue-size", type=int, default=5, help="requests that may wait (default: 5)")
    http.add_argument("--session-secret", default=None,
                      help=f"secret that signs session cookies (default: ${SECRET_ENV}, else random per process)")
    http.add_argument("--session-store", default=None, metavar="URL",
                      help="where conversations are kept: sqlite:///PATH, redis://[:password@]host:port/db "
                           "(rediss:// for TLS) or memory (default: a SQLite file under $XDG_STATE_HOME/chatstream, "
                           "else ~/.local/state/chatstream; see docs/sessions.md)")
    http.add_argument("--replica-name", default=None,
                      help="this process's name in /health, /get_load and /metrics (default: hostname:pid)")
    http.add_argument("--secure-cookies", action="store_true", help="mark the session cookie Secure (HTTPS)")
    http.add_argument("--api-key", default=None,
                      help=f"require this key on the OpenAI API (/v1/...) as `Authorization: Bearer KEY` "
                           f"(default: ${API_KEY_ENV}, else no key)")
    http.add_argument("--metrics-key", default=None,
                      help=f"require this key on GET /metrics as `Authorization: Bearer KEY` (default: "
                           f"${METRICS_KEY_ENV}, else /metrics is open, even with --api-key; give it the API key's "
                           "value to guard both with one key)")
    http.add_argument("--model-name", default=None,
                      help="the model id the OpenAI API serves (default: the model directory's name)")
    http.add_argument("--locale", choices=("en", "ja"), default=None)
    http.add_argument("--api-docs", action="store_true",
                      help="serve /docs, /redoc and /openapi.json (off by default: the pages load CDN scripts)")
    http.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    sampling = serve.add_argument_group("generation")
    add_sampling_arguments(sampling)
    add_stopping_arguments(sampling)
    commands.add_parser("chat", help="chat with a model in the terminal (see `chatstream chat --help`)",
                        add_help=False)
    commands.add_parser("cassette", help="list, show, diff, verify and prune cassettes (see `chatstream cassette "
                        "--help`)", add_help=False)
    return parser


def _chat_stream_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from .client_roles import client_role_chat_page
    from .session_stores import default_store_url

    return {
        "num_of_concurrent_executions": args.concurrency,
        "max_queue_size": args.queue_size,
        "too_many_request_as_http_error": True,
        **generation_kwargs(args),
        "locale": args.locale,
        "session_secret": args.session_secret or os.environ.get(SECRET_ENV) or None,
        "session_cookie_secure": args.secure_cookies,
        "api_key": args.api_key or os.environ.get(API_KEY_ENV) or None,
        "model_name": args.model_name,
        "metrics_key": args.metrics_key or os.environ.get(METRICS_KEY_ENV) or None,
        "session_store": args.session_store or default_store_url(),
        "replica_name": args.replica_name,
        "client_roles": client_role_chat_page,  # browsers: the page and its chat; no other API
    }


def _check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Path | None:
    """Fail before listening when an argument cannot work (a model too large for the device included); returns
    the model directory (None for --mock)."""
    from ..bundled import bundled_model_path
    from ..engine.device import resolve_device
    from ..engine.model_loading import check_checkpoint_fits
    from ..engine.model_source import resolve_model_dir
    from ..engine.prefix_cache import check_prefix_cache_mb
    from .admission import Admission
    from .session_stores import open_session_store

    try:
        Admission(args.concurrency, args.queue_size)
        if args.session_store is not None:
            open_session_store(args.session_store)  # a bad URL fails before listening (nothing connects yet)
        GenerationParams(**generation_kwargs(args))
        check_prefix_cache_mb(args.prefix_cache_mb)
        device = resolve_device(args.device)
        if args.mock:
            return None
        path = resolve_model_dir(args.model, what="--model") if args.model else bundled_model_path()
        check_checkpoint_fits(path, args.dtype, device)
        return path
    except ConfigurationError as error:
        parser.error(str(error).replace("num_of_concurrent_executions", "--concurrency")
                     .replace("max_queue_size", "--queue-size"))


def build_chat_stream(args: argparse.Namespace, path: Path | None, kwargs: dict[str, Any] | None = None) -> Any:
    """The ChatStream ``chatstream serve ARGS`` serves (``path``: the model directory ``_check`` found, None for
    the mock); loads the model. Ray Serve's replicas build theirs with it too (chatstream.serving.ray)."""
    from ..engine.model_loading import load_model
    from .chat_stream import ChatStream

    kwargs = kwargs if kwargs is not None else _chat_stream_kwargs(args)
    if path is None:
        return ChatStream(use_mock_response=True, mock_params={
            "type": args.mock_type, "time_per_token_sec": args.mock_time_per_token}, **kwargs)
    model, tokenizer = load_model(path, args.device, args.dtype)
    return ChatStream(model=model, tokenizer=tokenizer, device=args.device,
                      chat_prompt_clazz=prompt_class(args.prompt_preset), batching=args.batching,
                      prefix_cache_mb=args.prefix_cache_mb, **kwargs)


def parse_serve_args(argv: list[str]) -> tuple[argparse.Namespace, Path | None]:
    """``chatstream serve``'s options parsed and checked: (args, the model directory or None for --mock)."""
    parser = build_parser()
    args = parser.parse_args(["serve", *argv])
    return args, _check(args, parser)


def _url(host: str, port: int) -> str:
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def serve(argv: list[str] | None = None) -> int:
    args, path = parse_serve_args(list(argv or []))

    import uvicorn

    from .app import create_app
    from .chat_stream import ChatStream

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     [%(name)s] %(message)s")
    kwargs = _chat_stream_kwargs(args)

    def loader() -> ChatStream:
        return build_chat_stream(args, path, kwargs)

    config = uvicorn.Config(None, host=args.host, port=args.port, log_level=args.log_level, ws="none",
                            timeout_graceful_shutdown=5)
    sock = config.bind_socket()
    url = _url(args.host, sock.getsockname()[1])
    server: Any = None
    failed: list[BaseException] = []

    def on_ready(chat_stream: ChatStream) -> None:
        print(f"ChatStream is ready: open {url} in a browser", flush=True)

    def on_error(error: BaseException) -> None:
        failed.append(error)
        if server is not None:
            server.should_exit = True

    config.app = create_app(loader=loader, on_ready=on_ready, on_error=on_error, api_docs=args.api_docs)
    class Server(uvicorn.Server):
        interrupted = False  # set by Ctrl-C, whichever frame uvicorn's re-raise of it then reaches

        def handle_exit(self, sig: int, frame: Any) -> None:
            self.interrupted = self.interrupted or sig == signal.SIGINT
            super().handle_exit(sig, frame)

    server = Server(config)
    what = "the generator mock" if path is None else str(path)
    print(f"Serving {what} at {url} (GET /health answers 503 until the model is loaded)", flush=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after shutting down cleanly
        return 130
    finally:
        sock.close()
    if server.interrupted:  # Ctrl-C whose re-raise did not reach this frame (it can land in asyncio's teardown)
        return 130
    if failed:
        print(f"chatstream serve: the model could not be loaded: {failed[0]}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "chat":
        from .console import main as chat_main

        return chat_main(argv[1:])
    if argv and argv[0] == "cassette":
        from .cassette_tool import main as cassette_main

        return cassette_main(argv[1:])
    if argv and argv[0] == "serve":
        return serve(argv[1:])
    build_parser().parse_args(argv)  # prints usage / help and exits
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
