"""Soak: mixed hostile traffic against a real server, then check that nothing leaked (issue 10).

Runs `chatstream serve`'s app (the bundled tiny model, fixtures/tiny-chat) on uvicorn on 127.0.0.1 and
sends, for `--seconds`, a mix of: normal chats in concurrent sessions (cookie kept, several turns),
slow readers (a socket with a tiny receive buffer that reads a little, then stops), clients that
disconnect mid-stream, bad input (malformed, deeply nested or non-JSON bodies, bad parameters, lone
surrogates, oversized bodies), anonymous set_generation_params / clear_context calls, and 429s from
bursts. It reports at the start and at the end: free generation slots, open sessions, threads and the
resident memory (psutil), and checks that every slot is free afterwards and memory is flat within 10%
(measured after `--warmup` seconds of the same traffic, so that first-use allocations and the
allocators' caches are not counted); the resident memory is also printed every 30 s, to tell a
plateau from a leak.

    python bench/soak.py [--seconds 120] [--warmup 30] [--clients 6]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import random
import socket
import threading
import time

import httpx
import psutil
import uvicorn
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatstream.bundled import bundled_model_path
from chatstream.serving.app import create_app
from chatstream.serving.chat_stream import ChatStream
from chatstream.serving.client_roles import client_role_free_access
from chatstream.serving.sessions import MemorySessionStore

SECRET = "0123456789abcdef-soak"
QUESTIONS = ["Hello", "How are you?", "こんにちは", "Tell me a story", "What is the weather like?"]


def start_server(chat_stream: ChatStream) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(chat_stream), lifespan="on", log_level="critical", ws="none", http="h11",
                            timeout_graceful_shutdown=3, backlog=512)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread, f"127.0.0.1:{sock.getsockname()[1]}"


def _release_free_memory() -> None:
    """Collect cyclic garbage (most of it this process's own httpx client side) and hand the heap's free
    space back to the OS (glibc's malloc_trim), so resident memory measures what is live, not where the
    allocator's high-water mark happened to be between two full collections."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: resident memory keeps the free space
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def snapshot(chat_stream: ChatStream) -> dict:
    _release_free_memory()
    stats = chat_stream.admission.stats()
    store = chat_stream.sessions.store
    return {"free_slots": stats["max_running"] - stats["running"], "waiting": stats["waiting"],
            "sessions": len(store) if hasattr(store, "__len__") else -1, "threads": threading.active_count(),
            "rss_mib": psutil.Process().memory_info().rss / 2**20}


async def chat_session(base: str, rng: random.Random, counts: dict) -> None:
    async with httpx.AsyncClient(base_url=f"http://{base}", timeout=60) as client:
        for _ in range(rng.randint(2, 5)):
            response = await client.post("/chat_stream", json={"user_input": rng.choice(QUESTIONS)})
            counts[f"chat {response.status_code}"] = counts.get(f"chat {response.status_code}", 0) + 1
            # an empty answer is one chunk with the end-of-answer marker too: a 200 without it is a broken stream
            if response.status_code == 200 and not response.text.endswith("<::EOS::>"):
                counts["broken streams"] = counts.get("broken streams", 0) + 1
        if rng.random() < 0.3:
            await client.post("/set_generation_params", json={"temperature": rng.choice([0, 0.7, 1.5])})
        if rng.random() < 0.3:
            await client.post("/clear_context")


async def disconnecting(base: str, rng: random.Random, counts: dict) -> None:
    async with httpx.AsyncClient(base_url=f"http://{base}", timeout=60) as client:
        try:
            async with client.stream("POST", "/chat_stream", json={"user_input": rng.choice(QUESTIONS)}) as r:
                async for _ in r.aiter_bytes():
                    break  # leave after the first chunk
        except httpx.HTTPError:
            pass
    counts["disconnects"] = counts.get("disconnects", 0) + 1


def slow_reader(base: str, rng: random.Random, counts: dict) -> None:
    host, port = base.split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.settimeout(30)
    try:
        sock.connect((host, int(port)))
        body = json.dumps({"user_input": rng.choice(QUESTIONS)}).encode()
        sock.sendall(b"POST /chat_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        sock.recv(256)  # a little, then nothing: the server's send timeout must end it
        time.sleep(rng.uniform(0.5, 3))
    except OSError:
        pass
    finally:
        sock.close()
    counts["slow readers"] = counts.get("slow readers", 0) + 1


BAD_BODIES = [
    (b"{", "application/json"), (b"[" * 20000 + b"]" * 20000, "application/json"),
    (b'{"user_input": "a\\ud800"}', "application/json"), (b'{"user_input": 5}', "application/json"),
    (b"user_input=hi", "application/x-www-form-urlencoded"), (b'{"user_input": "hi"}', "text/plain"),
    (b"x" * 200_000, "application/json"), (b'{"regenerate": true}', "application/json"),
]
BAD_PARAMS = [{"seed": 2**64}, {"temperature": 1e-300}, {"repetition_penalty": 1e300}, {"top_k": 0},
              {"bogus": 1}, {"max_new_tokens": 10**9}]


async def bad_input(base: str, rng: random.Random, counts: dict) -> None:
    async with httpx.AsyncClient(base_url=f"http://{base}", timeout=60) as client:
        body, content_type = rng.choice(BAD_BODIES)
        response = await client.post("/chat_stream", content=body, headers={"Content-Type": content_type})
        counts[f"bad input {response.status_code}"] = counts.get(f"bad input {response.status_code}", 0) + 1
        response = await client.post("/set_generation_params", json=rng.choice(BAD_PARAMS))
        counts[f"bad params {response.status_code}"] = counts.get(f"bad params {response.status_code}", 0) + 1
        await client.post("/set_generation_params", json={"temperature": 0.5}, headers={"Cookie": ""})


async def one_round(base: str, rng: random.Random, clients: int, counts: dict) -> None:
    jobs = []
    for _ in range(clients):
        kind = rng.choices(["chat", "disconnect", "slow", "bad"], weights=[5, 2, 1, 2])[0]
        if kind == "chat":
            jobs.append(chat_session(base, rng, counts))
        elif kind == "disconnect":
            jobs.append(disconnecting(base, rng, counts))
        elif kind == "slow":
            jobs.append(asyncio.to_thread(slow_reader, base, rng, counts))
        else:
            jobs.append(bad_input(base, rng, counts))
    await asyncio.gather(*jobs)


async def settle(chat_stream: ChatStream, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = chat_stream.admission.stats()
        if stats["running"] == 0 and stats["waiting"] == 0:
            return
        await asyncio.sleep(0.1)


def show(label: str, figures: dict) -> None:
    print(f"{label:>6}: free slots {figures['free_slots']}, waiting {figures['waiting']}, sessions "
          f"{figures['sessions']}, threads {figures['threads']}, RSS {figures['rss_mib']:.1f} MiB", flush=True)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--warmup", type=float, default=30, help="seconds of traffic before the start figures")
    parser.add_argument("--clients", type=int, default=6, help="clients per round")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-sessions", type=int, default=100,
                        help="the session store's bound (filled during the warm-up, so memory must then stay flat)")
    args = parser.parse_args()
    path = bundled_model_path()
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    chat_stream = ChatStream(model=model, tokenizer=tokenizer, device="cpu", session_secret=SECRET,
                             num_of_concurrent_executions=2, max_queue_size=5, too_many_request_as_http_error=True,
                             max_new_tokens=48, send_timeout_sec=2.0, client_roles=client_role_free_access,
                             session_store=MemorySessionStore(max_sessions=args.max_sessions))
    server, thread, base = start_server(chat_stream)
    rng = random.Random(args.seed)
    counts: dict[str, int] = {}
    try:
        warm_until = time.monotonic() + args.warmup
        while True:  # warm-up: first-use allocations, allocator caches
            await one_round(base, rng, args.clients, counts)
            if time.monotonic() >= warm_until:
                break
        await settle(chat_stream)
        counts.clear()
        start = snapshot(chat_stream)
        show("start", start)
        began, rounds, report_at = time.monotonic(), 0, 30.0
        while time.monotonic() - began < args.seconds:
            await one_round(base, rng, args.clients, counts)
            rounds += 1
            if time.monotonic() - began >= report_at:
                _release_free_memory()
                rss = psutil.Process().memory_info().rss / 2**20
                sessions = len(chat_stream.sessions.store)
                print(f"  {report_at:4.0f} s: RSS {rss:.1f} MiB, sessions {sessions}", flush=True)
                report_at += 30
        await settle(chat_stream)
        await asyncio.sleep(3)  # stalled sends time out (2 s) and free their slots
        end = snapshot(chat_stream)
        show("end", end)
    finally:
        server.should_exit = True
        thread.join(10)
    print(f"{rounds} rounds in {time.monotonic() - began:.0f} s: " + ", ".join(f"{k} {v}" for k, v in
                                                                          sorted(counts.items())))
    growth = end["rss_mib"] / start["rss_mib"] - 1
    ok = end["free_slots"] == chat_stream.admission.max_running and end["waiting"] == 0 and growth <= 0.10 \
        and counts.get("broken streams", 0) == 0 and not any(k.endswith(" 500") for k in counts)
    print(f"slots all free: {end['free_slots'] == chat_stream.admission.max_running}; memory growth "
          f"{growth * 100:+.1f}% (limit +10%); {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
