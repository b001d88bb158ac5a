"""Serving overhead: ChatStream against a bare Starlette StreamingResponse, over real HTTP.

Both servers run uvicorn on loopback in their own process and stream the same chunks (the generator
mock's "long" answer, each chunk the whole answer so far plus ``<::EOS::>``). ChatStream runs its full
path: role check, session, admission, the mock generator in a worker thread one ``next()`` at a time,
history saved at the end; the bare server yields the precomputed chunks. ``--clients`` concurrent
clients each send ``--requests`` requests per round; rounds alternate between the two servers so
machine noise hits both alike. Prints tokens/s (one chunk = one token) for each and the overhead ratio
(bare / ChatStream; the target is <= 1.3).

    python bench/bench_serving.py [--clients 32] [--requests 4] [--rounds 5]

``--openai`` compares the OpenAI streaming endpoint (``POST /v1/chat/completions``, ``stream: true``) with
a bare Starlette response streaming the same SSE chunks, and prints each one's time to first token at the
95th percentile under that load (client side: from sending the request to the first content chunk).
"""

from __future__ import annotations

import argparse
import asyncio
import http.cookiejar
import socket
import statistics
import subprocess
import sys
import time

import httpx

EOS = b"<::EOS::>"
PROMPT = "Tell me a long story."


def chunks() -> list[str]:
    """The chunks ChatStream sends for PROMPT with the mock's "long" type."""
    from chatstream.engine.chat_prompt_presets import ChatPromptChatML
    from chatstream.engine.mock_generator import ChatGeneratorMock

    prompt = ChatPromptChatML()
    prompt.add_requester_msg(PROMPT)
    prompt.add_responder_msg(None)
    text, out = "", []
    for delta in ChatGeneratorMock(params={"type": "long"}).stream(prompt):
        text += delta
        out.append(text + EOS.decode())
    return out


def bare_app():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    prepared = chunks()

    async def chat(request):
        await request.body()

        async def body():
            for chunk in prepared:
                yield chunk

        return StreamingResponse(body(), media_type="text/plain")

    async def health(request):
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/chat_stream", chat, methods=["POST"]), Route("/health", health)])


def sse_chunks() -> list[bytes]:
    """The SSE lines ChatStream's OpenAI endpoint sends for PROMPT with the mock's "long" type."""
    from chatstream.serving import openai_protocol as proto

    text = [chunk.removesuffix(EOS.decode()) for chunk in chunks()]
    deltas = [b[len(a):] for a, b in zip(["", *text], text, strict=False)]
    cid, model = "chatcmpl-bench", "chatstream"
    lines = [proto.sse(proto.chunk(cid, 0, model, {"role": "assistant", "content": ""}))]
    lines += [proto.sse(proto.chunk(cid, 0, model, {"content": delta})) for delta in deltas]
    lines.append(proto.sse(proto.chunk(cid, 0, model, {}, "stop")) + proto.DONE_LINE)
    return lines


def bare_sse_app():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    prepared = sse_chunks()

    async def completions(request):
        await request.body()

        async def body():
            for line in prepared:
                yield line

        return StreamingResponse(body(), media_type="text/event-stream")

    async def health(request):
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"]), Route("/health", health)])


def chatstream_app(clients: int):
    from fastapi import FastAPI

    from chatstream.serving.chat_stream import ChatStream

    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "long"},
                             num_of_concurrent_executions=clients, max_queue_size=clients,
                             too_many_request_as_http_error=True, session_secret="bench-session-secret-0123")
    app = FastAPI(lifespan=chat_stream.lifespan)
    chat_stream.append_apis(app, {"include": ["chat_stream", "health", "openai"]})
    return app


def run_server(kind: str, port: int, clients: int) -> None:
    import uvicorn

    app = {"bare": bare_app, "bare-sse": bare_sse_app}[kind]() if kind.startswith("bare") else chatstream_app(clients)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, ws="none", http="h11")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(kind: str, clients: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port),
                                "--clients", str(clients)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise SystemExit(f"the {kind} server did not start")
        time.sleep(0.1)


async def one_round(url: str, clients: int, requests: int, openai: bool = False,
                    ttfts: list[float] | None = None) -> tuple[int, float]:
    """(tokens received, seconds) for ``clients`` concurrent clients sending ``requests`` each; ``openai``:
    streaming chat completions, each request's time to first token appended to ``ttfts``."""
    no_cookies = httpx.Cookies(http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[])))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits, cookies=no_cookies) as client:

        async def one_openai_client() -> int:
            tokens = 0
            body = {"model": "chatstream", "messages": [{"role": "user", "content": PROMPT}], "stream": True}
            for _ in range(requests):
                sent = time.perf_counter()
                first = None
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    assert response.status_code == 200, response.status_code
                    async for data in response.aiter_bytes():
                        count = data.count(b'"delta":{"content":')
                        if count and first is None:
                            first = time.perf_counter() - sent
                        tokens += count
                if ttfts is not None and first is not None:
                    ttfts.append(first)
            return tokens

        async def one_client() -> int:
            tokens = 0
            for _ in range(requests):
                async with client.stream("POST", "/chat_stream", json={"user_input": PROMPT}) as response:
                    assert response.status_code == 200, response.status_code
                    body = b"".join([data async for data in response.aiter_bytes()])
                    tokens += body.count(EOS)
            return tokens

        started = time.perf_counter()
        counts = await asyncio.gather(*((one_openai_client if openai else one_client)() for _ in range(clients)))
        return sum(counts), time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=4, help="requests per client per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--openai", action="store_true", help="the OpenAI streaming endpoint against bare SSE")
    parser.add_argument("--serve", choices=("bare", "bare-sse", "chatstream"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_server(args.serve, args.port, args.clients)
        return

    # one token per chunk; the OpenAI stream's first (role) chunk and last (finish) chunk carry no content
    expected = len(chunks()) * args.clients * args.requests
    kinds = ("bare-sse", "chatstream") if args.openai else ("bare", "chatstream")
    servers = {kind: start(kind, args.clients) for kind in kinds}
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    ttfts: dict[str, list[float]] = {kind: [] for kind in kinds}
    try:
        for _, url in servers.values():  # warm-up
            asyncio.run(one_round(url, args.clients, 1, args.openai))
        for _ in range(args.rounds):
            for kind, (_, url) in servers.items():
                tokens, seconds = asyncio.run(one_round(url, args.clients, args.requests, args.openai, ttfts[kind]))
                assert tokens == expected, (kind, tokens, expected)
                rates[kind].append(tokens / seconds)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(10)
    bare, ours = statistics.median(rates[kinds[0]]), statistics.median(rates["chatstream"])
    what = "OpenAI streaming endpoint" if args.openai else "ChatStream"
    print(f"{args.clients} clients x {args.requests} requests x {args.rounds} rounds, "
          f"{len(chunks())} tokens per answer")
    print(f"bare {'SSE' if args.openai else 'StreamingResponse'} : {bare:10.0f} tokens/s "
          f"(median; rounds {[round(r) for r in rates[kinds[0]]]})")
    print(f"{what:<26}: {ours:10.0f} tokens/s (median; rounds {[round(r) for r in rates['chatstream']]})")
    target = 1.2 if args.openai else 1.3
    print(f"overhead ratio (bare / {what}): {bare / ours:.2f}x  (target <= {target}x)")
    if args.openai:
        for kind in kinds:
            print(f"time to first token, {kind:<10}: p50 {percentile(ttfts[kind], 0.5) * 1000:7.1f} ms, "
                  f"p95 {percentile(ttfts[kind], 0.95) * 1000:7.1f} ms ({len(ttfts[kind])} requests)")


if __name__ == "__main__":
    main()
