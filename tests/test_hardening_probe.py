"""Issue 10, probe mode: a full disk loses nothing (retry, log once, /health, no temporary files left), and
a request's segment is on disk before its stream ends."""

import errno
import logging

import httpx
from _probe_support import ask, bundled
from fastapi import FastAPI

from chatstream.cassettes import cassette as fmt
from chatstream.cassettes.recording import ProbeRecorder
from chatstream.cassettes.replay import MockTransformer
from chatstream.engine.generation import ChatGenerator, GenerationParams
from chatstream.engine.token_sampler import TokenSamplerIsok
from chatstream.serving.chat_stream import ChatStream

PARAMS = GenerationParams(max_new_tokens=8, temperature=0, seed=7)


def _answer(model, tokenizer, sampler, question):
    return "".join(ChatGenerator(model, tokenizer, "cpu", PARAMS, sampler).stream(ask(tokenizer, question)))


class DiskFull:
    """Stands in for the low-level write of chatstream.cassettes.cassette: fails with ENOSPC while ``full``."""

    def __init__(self, real):
        self.real, self.full, self.failures = real, True, 0

    def __call__(self, file, data):
        if self.full:
            self.failures += 1
            file.write(data[: len(data) // 2])  # a partial write, as a filling disk does
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real(file, data)


def test_a_full_disk_loses_nothing_and_retries_on_the_next_flush(tmp_path, monkeypatch, caplog):
    model, tokenizer = bundled()
    disk = DiskFull(fmt._write_bytes)
    monkeypatch.setattr(fmt, "_write_bytes", disk)
    path = tmp_path / "c"
    disk.full = False
    recorder = ProbeRecorder(path)
    m, t, s = recorder.wrap(model, tokenizer, TokenSamplerIsok(seed=1))
    disk.full = True
    expected = [_answer(m, t, s, "Hello")]
    with caplog.at_level(logging.WARNING, logger="chatstream"):
        assert recorder.flush() == 0
        expected.append(_answer(m, t, s, "Hello"))  # the same conversation again: its tokenizer calls too
        assert recorder.flush() == 0
    assert disk.failures >= 2
    assert recorder.stats["error"] and "No space left" in recorder.stats["error"]
    assert recorder.stats["pending"] > 0
    assert len([r for r in caplog.records if "probe" in r.getMessage().lower()]) == 1  # logged once
    assert not [p.name for p in path.iterdir() if ".tmp-" in p.name]  # no temporary files left
    disk.full = False
    assert recorder.flush() > 0
    assert recorder.stats["error"] is None and recorder.stats["pending"] == 0
    recorder.close()
    replay = MockTransformer.from_path(path)
    model2, tokenizer2, sampler2 = replay.get_model(), replay.get_tokenizer(), replay.get_token_sampler()
    assert _answer(model2, tokenizer2, sampler2, "Hello") == expected[0] == expected[1]


async def test_health_reports_a_failing_recorder(tmp_path, monkeypatch):
    model, tokenizer = bundled()
    disk = DiskFull(fmt._write_bytes)
    disk.full = False
    monkeypatch.setattr(fmt, "_write_bytes", disk)
    chat_stream = ChatStream(model=model, tokenizer=tokenizer, device="cpu", probe_mode_enabled=True,
                             probe_dir=tmp_path, probe_name="c", max_new_tokens=4,
                             session_secret="0123456789abcdef-test")
    app = FastAPI(lifespan=chat_stream.lifespan)
    chat_stream.append_apis(app, {"all": True})
    await chat_stream.start_queue_worker()
    disk.full = True
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.post("/chat_stream", json={"user_input": "Hello"})).status_code == 200
        health = (await client.get("/health")).json()
        assert "No space left" in health["probe_recording"]["error"]
        disk.full = False
        await client.post("/chat_stream", json={"user_input": "Hi"})
        assert (await client.get("/health")).json()["probe_recording"]["error"] is None
    chat_stream.close()


async def test_a_requests_segment_is_on_disk_before_its_stream_ends(tmp_path):
    import asyncio

    from starlette.requests import Request

    model, tokenizer = bundled()
    chat_stream = ChatStream(model=model, tokenizer=tokenizer, device="cpu", probe_mode_enabled=True,
                             probe_dir=tmp_path, probe_name="c", max_new_tokens=4,
                             session_secret="0123456789abcdef-test")
    await chat_stream.start_queue_worker()
    seen_at_body_messages = []
    received = False

    async def receive():
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b'{"user_input": "Hello"}', "more_body": False}
        await asyncio.sleep(3600)

    async def send(message):
        if message["type"] == "http.response.body":
            segments = sorted(p.name for p in (tmp_path / "c").glob("segment-*.json"))
            seen_at_body_messages.append((message.get("more_body", False), message["body"], segments))

    scope = {"type": "http", "method": "POST", "path": "/chat_stream", "query_string": b"",
             "headers": [(b"content-type", b"application/json")], "asgi": {"spec_version": "2.4"}}
    response = await chat_stream.handle_chat_stream_request(Request(scope, receive))
    await response(scope, receive, send)
    chat_stream.close()
    last_with_bytes = [entry for entry in seen_at_body_messages if entry[1]][-1]
    assert last_with_bytes[2], "the answer's last byte was sent before its segment was written"
