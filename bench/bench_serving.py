"""Serving overhead: ChatStream against a bare Starlette StreamingResponse, over real HTTP, measured fairly.

Both servers run uvicorn on loopback in their own process and stream the same bytes in the same writes.
``--clients`` concurrent clients each send ``--requests`` requests per round; every round runs ChatStream
then the bare server, so machine noise hits both alike, and the figure is the **median of the per-round
ratios** (bare tokens/s / ChatStream tokens/s) with its spread; the output says how many rounds a +-5%
figure (95% confidence) needs at the spread seen. On a machine shared with other work the wall-clock ratio
swings with the neighbours' load, so the bench also reports the **CPU ratio**: the CPU seconds each server
process (all its threads) spent per token in the round, ChatStream's over bare's, which other processes
disturb far less. Each server reads its own CPU clock (``GET /bench/cpu``: ``time.process_time()``, to the
microsecond; /proc's figures tick every 10 ms, a fifth of a short ``--openai`` round).

The clients speak HTTP/1.1 themselves (asyncio streams, keep-alive) and read the chunked body chunk by
chunk: one HTTP chunk is one write of the server (uvicorn writes each ``http.response.body`` message as one
chunk). Per response they count writes and bytes, and the bench **asserts** both servers made the same
number of writes and sent the same bytes in every round.

    python bench/bench_serving.py [--clients 32] [--requests 4] [--rounds 9]

- default: ``POST /chat_stream`` (the 0.3 protocol; ``--delta`` asks for delta mode) with the generator
  mock's "long" answer against a bare server yielding the same precomputed chunks, one write per token on
  both sides.
- ``--openai``: ``POST /v1/chat/completions`` (``stream: true``). The endpoint joins what one driver hop
  produced into one write; the bare server is told, per request, how ChatStream grouped the SSE events of
  the matching request of the same round (``{"groups": [...]}`` in the body) and writes them in exactly
  those groups. Also prints each side's time to first token (client side: request sent -> first content
  chunk), p50 and p95 over all rounds.
- ``--in-process``: ``/chat_stream`` (or ``--delta``) only; both apps in this process, each request handed
  straight to the ASGI app (no uvicorn, no sockets, no client): ChatStream's own CPU per request, without the
  kernel's share, which depends on how closely a stream's writes follow each other.
- ``--profile FILE``: the ChatStream server runs under cProfile and writes its stats to FILE at exit
  (``python -m pstats FILE``; figures are then not comparable).

Set ``OMP_NUM_THREADS=1``; the figures are ratios measured in the same run, never absolute targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

EOS = b"<::EOS::>"
PROMPT = "Tell me a long story."
CID = "chatcmpl-" + "0" * 32  # as long as the endpoint's ids, so both send the same number of bytes
MODEL = "chatstream"


def deltas() -> list[str]:
    """The text pieces the generator mock's "long" answer is streamed in (one per token)."""
    from chatstream.engine.chat_prompt_presets import ChatPromptChatML
    from chatstream.engine.mock_generator import ChatGeneratorMock

    prompt = ChatPromptChatML()
    prompt.add_requester_msg(PROMPT)
    prompt.add_responder_msg(None)
    return list(ChatGeneratorMock(params={"type": "long"}).stream(prompt))


def chunks(delta: bool = False) -> list[bytes]:
    """The chunks ChatStream's /chat_stream sends for PROMPT: the answer so far (or, ``delta``, the new
    text) plus ``<::EOS::>``."""
    text, out = "", []
    for piece in deltas():
        text += piece
        out.append(((piece if delta else text) + EOS.decode()).encode())
    return out


def sse_lines(created: int) -> list[bytes]:
    """The SSE events ChatStream's OpenAI endpoint sends for PROMPT, one per element (the last is [DONE])."""
    from chatstream.serving import openai_protocol as proto

    lines = [proto.sse(proto.chunk(CID, created, MODEL, {"role": "assistant", "content": ""}))]
    lines += [proto.sse(proto.chunk(CID, created, MODEL, {"content": piece})) for piece in deltas()]
    lines.append(proto.sse(proto.chunk(CID, created, MODEL, {}, "stop")))
    lines.append(proto.DONE_LINE)
    return lines


def bare_app(delta: bool):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    prepared = chunks(delta)
    created = int(time.time())
    lines = sse_lines(created)

    async def chat(request):
        await request.body()

        async def body():
            for chunk in prepared:
                yield chunk

        return StreamingResponse(body(), media_type="text/plain")

    async def completions(request):
        groups = json.loads(await request.body()).get("groups") or [1] * len(lines)

        async def body():
            at = 0
            for size in groups:
                yield b"".join(lines[at:at + size])
                at += size

        return StreamingResponse(body(), media_type="text/event-stream")

    async def health(request):
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/chat_stream", chat, methods=["POST"]),
                             Route("/v1/chat/completions", completions, methods=["POST"]),
                             Route("/health", health), Route(CPU_PATH, report_cpu)])


def chatstream_app(clients: int):
    from fastapi import FastAPI

    from chatstream.serving.chat_stream import ChatStream

    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "long"},
                             num_of_concurrent_executions=clients, max_queue_size=clients,
                             too_many_request_as_http_error=True, session_secret="bench-session-secret-0123")
    app = FastAPI(lifespan=chat_stream.lifespan)
    chat_stream.append_apis(app, {"include": ["chat_stream", "health", "openai"]})
    app.router.add_route(CPU_PATH, report_cpu)
    return app


def run_server(kind: str, port: int, clients: int, delta: bool, profile: str | None) -> None:
    import signal

    import uvicorn

    app = bare_app(delta) if kind == "bare" else chatstream_app(clients)
    if kind == "bare":  # frozen as ChatStream's start freezes it: neither side's collector walks the torch heap
        from chatstream.serving import startup_heap  # both import, which a bare Starlette app would not have

        startup_heap.hold()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, ws="none",
                            http="h11")
    if profile is None:
        uvicorn.Server(config).run()
        return
    import cProfile

    profiler = cProfile.Profile()
    signal.signal(signal.SIGTERM, lambda *_: (profiler.disable(), profiler.dump_stats(profile), os._exit(0)))
    profiler.enable()
    uvicorn.Server(config).run()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(kind: str, args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, __file__, "--serve", kind, "--port", str(port), "--clients", str(args.clients)]
    if args.delta:
        command.append("--delta")
    if args.profile and kind == "chatstream":
        command += ["--profile", args.profile]
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, port
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise SystemExit(f"the {kind} server did not start")
        time.sleep(0.1)


@dataclass
class Reply:
    """One streamed response as the client read it: its HTTP chunks (= the server's writes)."""

    status: int
    writes: list[bytes] = field(default_factory=list)
    first_content: float | None = None  # seconds from sending the request to the first content chunk


class Connection:
    """A minimal keep-alive HTTP/1.1 client that reads chunked bodies chunk by chunk."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, path: str, body: dict, content_marker: bytes | None = None) -> Reply:
        data = json.dumps(body).encode()
        sent = time.perf_counter()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        reply = Reply(int(head.split(b" ", 2)[1]))
        if b"transfer-encoding: chunked" not in head.lower():
            raise AssertionError(f"not a chunked stream: {head!r}")
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return reply
            chunk = (await self.reader.readexactly(size + 2))[:-2]
            if reply.first_content is None and content_marker is not None and content_marker in chunk:
                reply.first_content = time.perf_counter() - sent
            reply.writes.append(chunk)

    def close(self) -> None:
        self.writer.close()


CONTENT = b'"delta":{"content":'


@dataclass
class Round:
    tokens: int
    seconds: float
    writes: int
    bytes: int
    ttfts: list[float]
    groups: list[list[int]]  # per request (client-major), the SSE events in each write


async def one_round(port: int, clients: int, requests: int, openai: bool, delta: bool,
                    groups: list[list[int]] | None = None) -> Round:
    """``clients`` concurrent clients sending ``requests`` each; ``groups``: what the bare SSE server is told."""
    connections = [await Connection.open(port) for _ in range(clients)]

    async def client(index: int) -> list[Reply]:
        replies = []
        for number in range(requests):
            if openai:
                body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "stream": True}
                if groups is not None:
                    body["groups"] = groups[index * requests + number]
                reply = await connections[index].post("/v1/chat/completions", body, CONTENT)
            else:
                body = {"user_input": PROMPT, **({"stream_mode": "delta"} if delta else {})}
                reply = await connections[index].post("/chat_stream", body)
            assert reply.status == 200, reply.status
            replies.append(reply)
        return replies

    try:
        started = time.perf_counter()
        results = await asyncio.gather(*(client(i) for i in range(clients)))
        seconds = time.perf_counter() - started
    finally:
        for connection in connections:
            connection.close()
    replies = [reply for result in results for reply in result]
    writes = [w for reply in replies for w in reply.writes]
    tokens = sum(w.count(CONTENT) for w in writes) if openai else sum(w.count(EOS) for w in writes)
    return Round(tokens, seconds, len(writes), sum(map(len, writes)),
                 [r.first_content for r in replies if r.first_content is not None],
                 [[w.count(b"data: ") for w in r.writes] for r in replies])


CPU_PATH = "/bench/cpu"  # both servers answer it with time.process_time()


async def report_cpu(request):
    from starlette.responses import PlainTextResponse

    return PlainTextResponse(repr(time.process_time()))


def cpu_seconds(port: int) -> float:
    """The CPU seconds a server process has used so far, all its threads (exited ones too), read by the process
    itself (``CLOCK_PROCESS_CPUTIME_ID``): /proc's counters tick every 10 ms, a fifth of a short round."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", CPU_PATH)
        return float(connection.getresponse().read())
    finally:
        connection.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rounds_for(ratios: list[float], margin: float = 0.05) -> int:
    """Rounds for a 95% confidence interval of +-``margin`` around the mean ratio, at the spread seen."""
    if len(ratios) < 2:
        return 0
    relative = statistics.stdev(ratios) / statistics.mean(ratios)
    return max(2, math.ceil((1.96 * relative / margin) ** 2))


def asgi_scope(path: str, body: bytes) -> dict:
    """The scope uvicorn's h11 server gives a POST (ASGI spec 2.3, as it reports)."""
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
            "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())]}


async def asgi_request(app, path: str, body: bytes) -> tuple[int, int]:
    """One request handed straight to ``app``, no server and no socket: (body messages, bytes) of its response."""
    received, writes, size = False, 0, 0
    finished = asyncio.Event()

    async def receive() -> dict:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal writes, size
        if message["type"] == "http.response.body":
            if message.get("body"):
                writes, size = writes + 1, size + len(message["body"])
            if not message.get("more_body"):
                finished.set()

    await app(asgi_scope(path, body), receive, send)
    return writes, size


async def in_process(args: argparse.Namespace) -> None:
    """``--in-process``: both apps in this process, driven through ASGI (no uvicorn, no sockets, no client):
    the CPU each spends per request on its own work, rounds interleaved, same writes and bytes asserted."""
    import contextlib

    body = json.dumps({"user_input": PROMPT, **({"stream_mode": "delta"} if args.delta else {})}).encode()
    apps = {"chatstream": chatstream_app(args.clients), "bare": bare_app(args.delta)}
    per_request: dict[str, list[float]] = {"chatstream": [], "bare": []}
    async with contextlib.AsyncExitStack() as stack:  # ChatStream's lifespan freezes the heap both apps share
        await stack.enter_async_context(apps["chatstream"].router.lifespan_context(apps["chatstream"]))
        for kind in ("chatstream", "bare"):  # warm-up
            await asyncio.gather(*(asgi_request(apps[kind], "/chat_stream", body) for _ in range(args.clients)))
        for r in range(args.rounds):
            work = {}
            for kind in (("chatstream", "bare") if r % 2 == 0 else ("bare", "chatstream")):
                started = time.process_time()
                replies = []
                for _ in range(args.requests):
                    replies += await asyncio.gather(*(asgi_request(apps[kind], "/chat_stream", body)
                                                      for _ in range(args.clients)))
                per_request[kind].append((time.process_time() - started) / len(replies))
                work[kind] = replies
            assert work["chatstream"] == work["bare"], "unequal work: the apps made different writes or bytes"
    writes, size = work["bare"][0]
    ratios = [ours / bare for ours, bare in zip(per_request["chatstream"], per_request["bare"], strict=True)]
    print(f"in process (ASGI, no sockets): {args.clients} concurrent x {args.requests} requests x {args.rounds} "
          f"rounds; both sides: {writes} writes and {size} bytes per response")
    for kind in ("bare", "chatstream"):
        print(f"{kind:<10}: {1e6 * statistics.median(per_request[kind]):7.0f} us CPU per request (median; "
              f"{1e6 * statistics.median(per_request[kind]) / writes:.2f} per write)")
    print(f"CPU ratio (chatstream / bare), median of per-round ratios: {statistics.median(ratios):.2f}x (spread "
          f"{min(ratios):.2f}-{max(ratios):.2f}; +-5% needs {rounds_for(ratios)} rounds); ChatStream's own work: "
          f"{1e6 * (statistics.median(per_request['chatstream']) - statistics.median(per_request['bare'])):.0f} us "
          f"per request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=4, help="requests per client per round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--openai", action="store_true", help="the OpenAI streaming endpoint against bare SSE")
    parser.add_argument("--delta", action="store_true", help="/chat_stream in delta mode (stream_mode: delta)")
    parser.add_argument("--profile", help="run the ChatStream server under cProfile, stats to this file")
    parser.add_argument("--in-process", action="store_true",
                        help="/chat_stream, both apps driven through ASGI in this process: no server, no sockets")
    parser.add_argument("--serve", choices=("bare", "chatstream"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_server(args.serve, args.port, args.clients, args.delta, args.profile)
        return
    if args.in_process:
        asyncio.run(in_process(args))
        return

    per_answer = len(deltas())
    expected = per_answer * args.clients * args.requests
    servers = {kind: start(kind, args) for kind in ("chatstream", "bare")}
    ratios: list[float] = []
    cpu_ratios: list[float] = []
    rates: dict[str, list[float]] = {"chatstream": [], "bare": []}
    ttfts: dict[str, list[float]] = {"chatstream": [], "bare": []}
    writes = 0
    try:
        for kind in ("chatstream", "bare"):  # warm-up
            asyncio.run(one_round(servers[kind][1], args.clients, 1, args.openai, args.delta))
        for _ in range(args.rounds):
            cpu = cpu_seconds(servers["chatstream"][1])
            ours = asyncio.run(one_round(servers["chatstream"][1], args.clients, args.requests, args.openai,
                                         args.delta))
            cpu_ours = cpu_seconds(servers["chatstream"][1]) - cpu
            cpu = cpu_seconds(servers["bare"][1])
            bare = asyncio.run(one_round(servers["bare"][1], args.clients, args.requests, args.openai, args.delta,
                                         ours.groups if args.openai else None))
            cpu_ratios.append(cpu_ours / (cpu_seconds(servers["bare"][1]) - cpu))
            for kind, result in (("chatstream", ours), ("bare", bare)):
                assert result.tokens == expected, (kind, result.tokens, expected)
                rates[kind].append(result.tokens / result.seconds)
                ttfts[kind] += result.ttfts
            assert (ours.writes, ours.bytes) == (bare.writes, bare.bytes), \
                f"unequal work: ChatStream {ours.writes} writes/{ours.bytes} B, bare {bare.writes}/{bare.bytes} B"
            writes = ours.writes
            ratios.append(rates["bare"][-1] / rates["chatstream"][-1])
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(30)
    what = "OpenAI streaming endpoint" if args.openai else "/chat_stream" + (" (delta)" if args.delta else "")
    requests = args.clients * args.requests
    print(f"{args.clients} clients x {args.requests} requests x {args.rounds} rounds, {per_answer} tokens per "
          f"answer; both sides: {writes / requests:.1f} writes and {ours.bytes / requests:.0f} bytes per response")
    print(f"bare          : {statistics.median(rates['bare']):10.0f} tokens/s (median; rounds "
          f"{[round(r) for r in rates['bare']]})")
    print(f"{what:<14}: {statistics.median(rates['chatstream']):10.0f} tokens/s (median; rounds "
          f"{[round(r) for r in rates['chatstream']]})")
    target = 1.2 if args.openai else 1.1
    spread = f"{min(ratios):.2f}-{max(ratios):.2f}, stdev {statistics.stdev(ratios):.2f}" if len(ratios) > 1 else "-"
    print(f"overhead ratio (bare / {what}), median of per-round ratios: {statistics.median(ratios):.2f}x "
          f"(target <= {target}x; spread {spread}; rounds {[round(r, 2) for r in ratios]})")
    print(f"rounds needed for a +-5% figure (95% confidence) at this spread: {rounds_for(ratios)} "
          f"(ran {args.rounds})")
    print(f"CPU ratio (server CPU seconds per token, {what} / bare), median of per-round ratios: "
          f"{statistics.median(cpu_ratios):.2f}x (spread {min(cpu_ratios):.2f}-{max(cpu_ratios):.2f}; rounds "
          f"{[round(r, 2) for r in cpu_ratios]}; +-5% needs {rounds_for(cpu_ratios)} rounds)")
    if args.openai:
        for kind in ("bare", "chatstream"):
            print(f"time to first token, {kind:<10}: p50 {percentile(ttfts[kind], 0.5) * 1000:7.1f} ms, "
                  f"p95 {percentile(ttfts[kind], 0.95) * 1000:7.1f} ms ({len(ttfts[kind])} requests)")


if __name__ == "__main__":
    main()
