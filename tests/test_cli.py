import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
import torch

from chatstream.bundled import bundled_model_path
from chatstream.serving.app import create_app
from chatstream.serving.chat_stream import ChatStream
from chatstream.serving.cli import _url, main

EOS = "<::EOS::>"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--mock", "--queue-size", "0"], "--queue-size"),
        (["serve", "--mock", "--concurrency", "-1"], "--concurrency"),
        (["serve", "--mock", "--temperature", "-2"], "temperature"),
        (["serve", "--mock", "--device", "tpu"], "device"),
        (["serve", "--model", "/nonexistent/model"], "does not exist"),
        (["serve", "--model", "acme/not-downloaded"], "neither a local directory nor a Hub model"),
        (["serve", "--mock", "--stop", ""], "non-empty"),
        (["serve", "--mock", "--eos-token-id", "-3"], "token id"),
        (["serve", "--prompt-preset", "alpaca"], "invalid choice"),
        (["serve", "--dtype", "int8"], "invalid choice"),
        (["chat", "--dtype", "float64"], "invalid choice"),
        (["chat", "--model", "/nonexistent/model"], "does not exist"),
    ],
)
def test_bad_arguments_exit_2_before_listening(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["serve", "chat"])
def test_cuda_on_a_machine_without_it_exits_2_before_loading(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--device", "cuda"])
    assert exit_info.value.code == 2
    assert "sees no CUDA GPU here; use device 'cpu'" in capsys.readouterr().err


def test_a_model_directory_without_a_tokenizer_exits_2_naming_what_is_missing(tmp_path, capsys):
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(bundled_model_path() / name, tmp_path / name)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--model", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no tokenizer files" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["serve", "chat"])
def test_a_model_too_large_for_the_free_memory_exits_2_before_loading(command, monkeypatch, capsys):
    from chatstream.engine import model_loading

    monkeypatch.setattr(model_loading, "free_memory", lambda device: 1024)
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "needs 3.1 MiB for its weights alone in float32, but cpu has only 1.0 KiB free; it was not loaded." in err
    assert "--dtype bfloat16" in err


def test_stopping_and_preset_options_reach_chat_stream():
    from chatstream.engine.chat_prompt_presets import ChatPromptChatML
    from chatstream.serving.cli import _chat_stream_kwargs, build_parser, prompt_class

    args = build_parser().parse_args(["serve", "--stop", "###", "--stop", "END", "--eos-token-id", "7",
                                      "--prompt-preset", "chatml"])
    kwargs = _chat_stream_kwargs(args)
    assert kwargs["stop_strings"] == ["###", "END"] and kwargs["eos_token_ids"] == [7]
    assert prompt_class(args.prompt_preset) is ChatPromptChatML
    assert prompt_class(build_parser().parse_args(["serve"]).prompt_preset) is None


def test_api_key_and_model_name_options_and_defaults_from_generation_params(monkeypatch):
    from chatstream.engine.generation import GenerationParams
    from chatstream.serving.cli import _chat_stream_kwargs, build_parser

    monkeypatch.delenv("CHATSTREAM_API_KEY", raising=False)
    kwargs = _chat_stream_kwargs(build_parser().parse_args(["serve", "--api-key", "k1", "--model-name", "m"]))
    assert kwargs["api_key"] == "k1" and kwargs["model_name"] == "m"
    monkeypatch.setenv("CHATSTREAM_API_KEY", "from-env")
    kwargs = _chat_stream_kwargs(build_parser().parse_args(["serve"]))
    assert kwargs["api_key"] == "from-env" and kwargs["model_name"] is None
    defaults = GenerationParams()
    assert {name: kwargs[name] for name in ("temperature", "top_k", "top_p", "max_new_tokens", "context_len",
                                            "repetition_penalty", "seed")} == {
        name: getattr(defaults, name) for name in ("temperature", "top_k", "top_p", "max_new_tokens", "context_len",
                                                   "repetition_penalty", "seed")}


def test_metrics_key_option_and_its_environment_default(monkeypatch):
    from chatstream.serving.cli import _chat_stream_kwargs, build_parser

    monkeypatch.delenv("CHATSTREAM_METRICS_KEY", raising=False)
    assert _chat_stream_kwargs(build_parser().parse_args(["serve", "--metrics-key", "m1"]))["metrics_key"] == "m1"
    assert _chat_stream_kwargs(build_parser().parse_args(["serve", "--api-key", "k"]))["metrics_key"] is None
    monkeypatch.setenv("CHATSTREAM_METRICS_KEY", "from-env")
    assert _chat_stream_kwargs(build_parser().parse_args(["serve"]))["metrics_key"] == "from-env"


@pytest.mark.parametrize("command", ["serve", "chat"])
def test_model_help_says_hub_ids_from_the_local_cache_and_bundled_are_accepted(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "a Hub id (org/name) already in the local HF cache (nothing is downloaded), or `bundled`" in out


def test_chat_takes_the_generation_options_serve_takes(monkeypatch):
    from chatstream.serving import console

    seen = {}
    monkeypatch.setattr(console, "run_console_chat", lambda generator, new_prompt: seen.update(p=generator.params))
    assert main(["chat", "--model", "bundled", "--context-len", "512", "--repetition-penalty", "1.3",
                 "--temperature", "0", "--max-new-tokens", "5"]) == 0
    params = seen["p"]
    assert (params.context_len, params.repetition_penalty, params.temperature, params.max_new_tokens) == (
        512, 1.3, 0.0, 5)


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for option in ("--model", "--device", "--mock", "--host", "--port", "--concurrency", "--queue-size", "--api-key"):
        assert option in out


def test_printed_url():
    assert _url("0.0.0.0", 8000) == "http://127.0.0.1:8000/"
    assert _url("::", 80) == "http://[::1]:80/"


async def test_health_is_503_while_the_loader_runs(serve):
    release = threading.Event()

    def loader():
        release.wait(10)
        return ChatStream(use_mock_response=True, mock_params={"type": "echo"})

    ready = []
    base_url = serve(create_app(loader=loader, on_ready=ready.append))
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        assert (await client.get("/health")).status_code == 503
        assert (await client.post("/chat_stream", json={"user_input": "x"})).status_code == 503
        release.set()
        deadline = time.monotonic() + 10
        while (await client.get("/health")).status_code != 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert len(ready) == 1
        assert (await client.post("/chat_stream", json={"user_input": "x y"})).text.endswith("x y" + EOS)
        assert "<title>ChatStream</title>" in (await client.get("/")).text
        assert (await client.get("/get_load")).status_code == 403, "client_role_chat_page: the page's APIs only"


@contextlib.contextmanager
def chatstream_serve(*args, logs=None):
    """Run `chatstream serve --port 0 ...` in a subprocess; yields the URL it prints when ready. Its stderr is
    appended to ``logs`` (a list) once it has stopped."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "chatstream.serving.cli", "serve", "--port", "0", *args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as process:
        watchdog = threading.Timer(120, process.kill)  # never hang the suite on a stuck server
        watchdog.start()
        try:
            lines = []
            for line in process.stdout:
                lines.append(line)
                match = re.search(r"ChatStream is ready: open (http://\S+) ", line)
                if match:
                    break
            else:
                raise AssertionError(f"serve exited before it was ready: {lines} {process.stderr.read()}")
            yield match.group(1)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
            finally:
                watchdog.cancel()
        stderr = process.stderr.read()
        assert process.returncode == 130, stderr
        if logs is not None:
            logs.append(stderr)


def test_serve_defaults_to_the_bundled_model_and_serves_the_page():
    logs = []
    with chatstream_serve("--max-new-tokens", "8", "--api-key", "k", "--dtype", "bfloat16", logs=logs) as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/health").json()["status"] == "ok"
        assert "chatstream.js" in client.get("/").text
        answer = client.post("/chat_stream", json={"user_input": "Hello"})
        assert answer.status_code == 200 and answer.text.endswith(EOS)
        assert answer.headers["X-ChatStream-Last-Generated-Message-Id"]
        with openai.OpenAI(api_key="k", base_url=url.rstrip("/") + "/v1", max_retries=0) as oa:
            reply = oa.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "Hello"}])
            assert reply.choices[0].message.content and reply.usage.completion_tokens <= 8
        assert client.post("/v1/chat/completions", json={}).status_code == 401, "the key is required"
        assert "chatstream_requests_total" in client.get("/metrics").text
    assert "[chatstream] loaded tiny-chat: 0.8M parameters, bfloat16, on cpu; weights 1.5 MiB" in logs[0]


def test_serve_mock_with_limits_and_the_pages_roles():
    # 0.15 s a word: each burst answer takes 3 s, so all 10 requests are admitted or refused before a slot frees,
    # even on a loaded machine where the 10 connections take a while to open (at 1 s it could count (8, 2))
    args = ("--mock", "--mock-type", "echo", "--mock-time-per-token", "0.15", "--concurrency", "3", "--queue-size", "4")
    with chatstream_serve(*args) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.post("/chat_stream", json={"user_input": "a b"}).text.endswith("a b" + EOS)
            for path in ("/", "/chatstream.js", "/chatstream.css", "/health"):
                assert client.get(path).status_code == 200, path
            for path in ("/get_load", "/get_prompt", "/get_generation_params", "/get_resource_usage"):
                assert client.get(path).status_code == 403, path  # client_role_chat_page: the page's APIs only
            agent = {"X-FastSession-Skip": "skip"}
            assert client.post("/chat_stream", json={"user_input": "a"}, headers=agent).status_code == 403

        async def burst() -> list[int]:  # 10 new browsers at once: 3 generate, 4 wait, 3 are refused
            async def one() -> int:
                async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                    return (await client.post("/chat_stream", json={"user_input": "w " * 20})).status_code

            return await asyncio.gather(*(one() for _ in range(10)))  # each answer takes 3 s (20 words)

        statuses = asyncio.run(burst())
        assert (statuses.count(200), statuses.count(429)) == (7, 3), statuses


def test_stopping_the_server_while_the_model_loads_does_not_wait_for_the_load():
    from conftest import run_server

    release = threading.Event()
    loaded = []

    def loader():
        release.wait(20)  # a model that takes long to load
        loaded.append(True)
        return ChatStream(use_mock_response=True)

    threading.Timer(8, release.set).start()  # never leave the loader thread behind
    with run_server(create_app(loader=loader)) as base_url:
        assert httpx.get(base_url + "/health", timeout=10).status_code == 503
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 6 and not loaded  # well before the load ends (8 s): it was not waited for
    release.set()
