"""ChatStream on Ray Serve: an application builder, ``serve run chatstream.serving.ray:build_app key=value ...``.

    serve run chatstream.serving.ray:build_app model=/models/chat num_replicas=2 \\
        session_store=redis://cache:6379/0 session_secret=$SECRET num_gpus=0.5

Ray's conventions, not a wrapper of ours: ``build_app(args) -> Application`` is an application builder
(Ray passes the ``key=value`` pairs as a dict), the deployment is a class under ``@serve.deployment`` and
``@serve.ingress`` (the ASGI app built on each replica, after its constructor loaded the model), and
Ray's deployment options are set from these keys:

- ``num_replicas`` (an integer, or ``auto``), ``min_replicas`` / ``max_replicas`` /
  ``target_ongoing_requests`` (autoscaling on ongoing requests; any of them turns it on),
  ``max_ongoing_requests`` (what Ray's proxy sends to one replica at once; default ``concurrency +
  queue_size``, so each replica keeps its own queue and 429s), ``num_cpus`` / ``num_gpus`` (fractions
  allowed) and ``name`` (the deployment's name).

Every other key is a ``chatstream serve`` option, with ``_`` for ``-`` (``session_secret``,
``session_store``, ``temperature``, ``device``, ``concurrency``, ``mock``...; ``true``/``false`` for
flags). Replicas share conversations through the session store, so give them the same
``session_secret`` and a shared store (Redis across machines; see docs/sessions.md). Needs
``chatstream[ray]``.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from ..exceptions import ConfigurationError

_DEPLOYMENT_KEYS = {"num_replicas", "min_replicas", "max_replicas", "target_ongoing_requests",
                    "max_ongoing_requests", "num_cpus", "num_gpus", "name"}
_FLAGS = {"mock", "secure_cookies", "api_docs", "batching"}  # serve options that take no value


def serve_argv(options: dict[str, Any]) -> list[str]:
    """``chatstream serve``'s argument list for ``key=value`` options (``True``/"true" flags, "false" omitted)."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if key in _FLAGS:
            if text not in ("true", "false"):
                raise ConfigurationError(f"`{key}` (={value!r}) is a flag: true or false.")
            if text == "true":
                argv.append(flag)
            elif key == "batching":
                argv.append("--no-batching")
        else:
            argv += [flag, text]
    return argv


def _parse(argv: list[str]) -> tuple[Any, Any]:
    from .cli import parse_serve_args

    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return parse_serve_args(argv)
    except SystemExit:
        message = errors.getvalue().strip().splitlines()[-1:] or ["bad options"]
        raise ConfigurationError(f"build_app: {message[0]} (options are chatstream serve's, with _ for -)") from None


def deployment_options(options: dict[str, Any], serve_args: Any) -> dict[str, Any]:
    """Ray Serve's deployment options for the deployment keys of ``options``."""
    def number(key: str, kind: type) -> Any:
        try:
            return kind(options[key])
        except ValueError:
            raise ConfigurationError(f"`{key}` (={options[key]!r}) must be a {kind.__name__}.") from None

    result: dict[str, Any] = {
        "max_ongoing_requests": number("max_ongoing_requests", int) if "max_ongoing_requests" in options
        else serve_args.concurrency + serve_args.queue_size,
    }
    actor = {key: number(key, float) for key in ("num_cpus", "num_gpus") if key in options}
    if actor:
        result["ray_actor_options"] = actor
    autoscaling = {key: number(key, float if key == "target_ongoing_requests" else int)
                   for key in ("min_replicas", "max_replicas", "target_ongoing_requests") if key in options}
    if options.get("num_replicas") == "auto" or autoscaling:
        result["num_replicas"] = "auto"
        result["autoscaling_config"] = autoscaling
    elif "num_replicas" in options:
        result["num_replicas"] = number("num_replicas", int)
    if "name" in options:
        result["name"] = str(options["name"])
    return result


def build_app(args: dict[str, Any]) -> Any:
    """The Ray Serve application of ``args`` (``key=value`` pairs, see the module doc)."""
    try:
        from ray import serve
    except ImportError as error:
        raise ConfigurationError("Ray Serve is not installed: pip install 'chatstream[ray]'.") from error
    options = {str(key): value for key, value in dict(args).items()}
    argv = serve_argv({key: value for key, value in options.items() if key not in _DEPLOYMENT_KEYS})
    serve_args, _ = _parse(argv)  # fail here, in the driver, not in every replica
    if serve_args.replica_name is not None:
        raise ConfigurationError("`replica_name` is set by each Ray replica (deployment#replica id); leave it out.")

    @serve.ingress()
    class ChatStreamDeployment:
        """One replica: one ChatStream with its own model, admission queue and 429s."""

        def __init__(self, argv: list[str]) -> None:
            from .app import create_app
            from .cli import build_chat_stream

            replica = serve.get_replica_context().replica_id
            args, path = _parse([*argv, "--replica-name", f"{replica.deployment_id.name}#{replica.unique_id}"])
            chat_stream = build_chat_stream(args, path)  # the model loads before Ray routes a request here
            self._asgi = create_app(chat_stream, api_docs=args.api_docs)  # not `app`: Ray's wrapper has one

        def __serve_build_asgi_app__(self) -> Any:
            return self._asgi

    deployment = serve.deployment(ChatStreamDeployment, **deployment_options(options, serve_args))
    return deployment.bind(argv)


__all__ = ["build_app", "deployment_options", "serve_argv"]
