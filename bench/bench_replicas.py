"""Sessions and replicas, in one run (docs/sessions.md):

1. one ``chatstream serve`` replica (the bundled model, greedy) with the memory, SQLite and Redis session
   stores: time to first token p50 and tokens/s of multi-turn conversations, one request at a time
   (targets: SQLite and Redis within 1.1x of memory);
2. Ray Serve, 2 replicas vs 1, one thread each: aggregate tokens/s of 16 concurrent conversations
   (target >= 1.6x; it needs 2 free cores);
3. Ray's proxy vs direct uvicorn on one replica: time to first token p50 (target within 1.3x); and the
   same for a model-less FastAPI stream (``echo_app``), so the line says how much of the difference is
   Ray's proxy itself, which any stream pays.

    OMP_NUM_THREADS=1 python bench/bench_replicas.py [--turns 3] [--conversations 8] [--rounds 3] [--no-ray]

Parts 2 and 3 need ``chatstream[ray]`` (skipped with a note otherwise); the Redis figure needs
``redis-server`` on PATH. Every server runs on loopback and is stopped at the end. Tokens are counted as
the 0.3 stream's frames (one per generated token).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

EOS = "<::EOS::>"
SECRET = "bench-replicas-secret-0123456789"
SERVE = ("--temperature", "0", "--max-new-tokens", "32", "--session-secret", SECRET, "--concurrency", "16",
         "--queue-size", "64")
QUESTIONS = ["Hello", "What is your name?", "Tell me about the weather.", "And tomorrow?"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def chatstream_serve(*args: str):
    command = [sys.executable, "-m", "chatstream.serving.cli", "serve", "--port", "0", "--log-level", "warning",
               *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in process.stdout:
            match = re.search(r"ChatStream is ready: open (http://\S+) ", line)
            if match:
                break
        else:
            raise SystemExit("chatstream serve did not start")
        yield match.group(1)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        process.stdout.close()


@contextlib.contextmanager
def redis_server(directory: str):
    port = free_port()
    process = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--dir",
                                directory, "--save", ""], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(10)


async def one_turn(client: httpx.AsyncClient, url: str, cookie: str | None, text: str
                   ) -> tuple[float, int, float, str | None]:
    """(time to first token, tokens, seconds, cookie) of one streamed turn."""
    cookies = {"chatstream_session": cookie} if cookie else {}
    started = time.perf_counter()
    first, body = None, ""
    async with client.stream("POST", url + "chat_stream", json={"user_input": text}, cookies=cookies) as response:
        assert response.status_code == 200, response.status_code
        async for chunk in response.aiter_text():
            if first is None and chunk:
                first = time.perf_counter() - started
            body += chunk
        cookie = response.cookies.get("chatstream_session") or cookie
    return first or 0.0, body.count(EOS), time.perf_counter() - started, cookie


async def conversations(url: str, count: int, turns: int, concurrent: bool) -> tuple[list[float], float]:
    """Run ``count`` conversations of ``turns`` turns: (every turn's TTFT, aggregate tokens/s)."""
    async with httpx.AsyncClient(timeout=300) as client:
        ttfts: list[float] = []
        tokens = 0

        async def conversation() -> None:
            nonlocal tokens
            cookie = None
            for turn in range(turns):
                ttft, count_, _, cookie = await one_turn(client, url, cookie, QUESTIONS[turn % len(QUESTIONS)])
                ttfts.append(ttft)
                tokens += count_

        started = time.perf_counter()
        if concurrent:
            await asyncio.gather(*(conversation() for _ in range(count)))
        else:
            for _ in range(count):
                await conversation()
        return ttfts, tokens / (time.perf_counter() - started)


def measure(url: str, count: int, turns: int, concurrent: bool = False) -> tuple[float, float]:
    asyncio.run(conversations(url, 2, 1, False))  # warm-up
    ttfts, rate = asyncio.run(conversations(url, count, turns, concurrent))
    return statistics.median(ttfts), rate


def stores_part(args: argparse.Namespace, tmp: str) -> None:
    print(f"1. one replica per store, {args.rounds} rounds x {args.conversations} conversations x {args.turns} "
          "turns, one request at a time; rounds alternate between the stores so machine noise hits all alike")
    stores = {"memory": "memory", "sqlite": f"sqlite://{tmp}/sessions.sqlite3"}
    with contextlib.ExitStack() as stack:
        if shutil.which("redis-server"):
            stores["redis"] = stack.enter_context(redis_server(tmp))
        else:
            print("   (redis-server not installed: no Redis figure)")
        urls = {name: stack.enter_context(chatstream_serve(*SERVE, "--session-store", url))
                for name, url in stores.items()}
        for url in urls.values():
            asyncio.run(conversations(url, 2, 1, False))  # warm-up
        ttfts: dict[str, list[float]] = {name: [] for name in urls}
        rates: dict[str, list[float]] = {name: [] for name in urls}
        for _ in range(args.rounds):
            for name, url in urls.items():
                round_ttfts, rate = asyncio.run(conversations(url, args.conversations, args.turns, False))
                ttfts[name] += round_ttfts
                rates[name].append(rate)
    results = {name: (statistics.median(ttfts[name]), statistics.median(rates[name])) for name in urls}
    memory = results["memory"]
    for name, (ttft, rate) in results.items():
        print(f"   {name:7s} TTFT p50 {ttft * 1000:7.1f} ms ({ttft / memory[0]:.2f}x memory)   "
              f"{rate:7.1f} tokens/s ({memory[1] / rate:.2f}x slower than memory; target <= 1.1x)", flush=True)


def echo_app():
    """A FastAPI app streaming 32 fixed 0.3 frames per turn, no model and no session: what Ray's proxy adds to
    any stream, measured the same way as ChatStream's (part 3's floor)."""
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    async def chat_stream(request):  # a plain Starlette route: the request is not a parameter to validate
        await request.body()

        async def frames():
            for index in range(32):
                yield "x" * index + EOS

        return StreamingResponse(frames(), media_type="text/plain")

    app = FastAPI()
    app.add_route("/chat_stream", chat_stream, methods=["POST"])
    return app


@contextlib.contextmanager
def echo_serve():
    port = free_port()
    command = [sys.executable, "-c", "import sys, uvicorn; sys.path.insert(0, sys.argv[2]); import bench_replicas; "
               "uvicorn.run(bench_replicas.echo_app(), host='127.0.0.1', port=int(sys.argv[1]), log_level='warning')",
               str(port), str(Path(__file__).parent)]
    process = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.post(url + "chat_stream", json={}, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("the echo server did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(20)


def ray_part(args: argparse.Namespace, tmp: str) -> None:
    try:
        import ray
        from ray import serve
    except ImportError:
        print("2./3. skipped: Ray Serve is not installed (pip install 'chatstream[ray]')")
        return
    from chatstream.serving.ray import build_app

    options = {"temperature": "0", "max_new_tokens": "32", "session_secret": SECRET, "concurrency": "16",
               "queue_size": "64", "session_store": f"sqlite://{tmp}/ray.sqlite3"}
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        rates = {}
        for replicas in (1, 2):
            serve.run(build_app({**options, "num_replicas": str(replicas), "num_cpus": "1"}), route_prefix="/",
                      name="chatstream")
            rates[replicas] = measure(url, 16, args.turns, concurrent=True)[1]
            if replicas == 1:
                ray_ttft = measure(url, args.conversations, args.turns)[0]
        serve.delete("chatstream")
        serve.run(serve.deployment(serve.ingress(echo_app())(type("Echo", (), {}))).bind(), route_prefix="/",
                  name="echo")
        ray_echo_ttft = measure(url, args.conversations, args.turns)[0]
        print(f"2. Ray Serve, 16 concurrent conversations x {args.turns} turns, one thread per replica")
        print(f"   1 replica  {rates[1]:7.1f} tokens/s\n   2 replicas {rates[2]:7.1f} tokens/s "
              f"({rates[2] / rates[1]:.2f}x; target >= 1.6x)")
    finally:
        serve.shutdown()
        ray.shutdown()
    with chatstream_serve(*SERVE, "--session-store", "memory") as base:
        direct_ttft = measure(base, args.conversations, args.turns)[0]
    with echo_serve() as echo:
        direct_echo_ttft = measure(echo, args.conversations, args.turns)[0]
    print(f"3. one replica, one request at a time: TTFT p50 through Ray's proxy {ray_ttft * 1000:.1f} ms, direct "
          f"uvicorn {direct_ttft * 1000:.1f} ms ({ray_ttft / direct_ttft:.2f}x; target <= 1.3x)")
    print(f"   floor: a model-less FastAPI stream of 32 frames, through Ray's proxy {ray_echo_ttft * 1000:.1f} ms, "
          f"direct {direct_echo_ttft * 1000:.1f} ms: Ray's proxy adds {(ray_echo_ttft - direct_echo_ttft) * 1000:.1f} "
          f"ms to any stream here; ChatStream's added {(ray_ttft - direct_ttft) * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        stores_part(args, tmp)
        if not args.no_ray:
            ray_part(args, str(Path(tmp)))


if __name__ == "__main__":
    main()
