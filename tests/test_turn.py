"""The 0.3 chat turn (chatstream.serving.turn): outcomes as metrics.Outcome, recorded for /chat_stream like the OpenAI
endpoint's; the body parsed once; the console turn on the shared driver."""

import asyncio
import threading
import time

import httpx
from _serving_fakes import GatedGenerator
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from chatstream.serving.chat_stream import ChatStream
from chatstream.serving.metrics import Outcome
from chatstream.serving.turn import GENERATION_ERROR, PROCESS_REQUEST_ERROR, outcome_of


def scrape(chat_stream) -> dict:
    families = text_string_to_metric_families(chat_stream.metrics.render().decode())
    return {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}


def count(got, name, **labels):
    want = {("endpoint", "chat_stream"), ("source", "live"), *labels.items()}
    return got.get((name, frozenset(want)), 0)


async def started(**kwargs):
    chat_stream = ChatStream(session_secret="0123456789abcdef-test", **kwargs)
    app = FastAPI()
    chat_stream.append_apis(app, {"all": True})
    await chat_stream.start_queue_worker()
    return chat_stream, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def test_finish_messages_map_to_outcomes():
    assert outcome_of("success") is Outcome.SUCCESS
    assert outcome_of("client_disconnected_while_streaming") is Outcome.DISCONNECTED_WHILE_STREAMING
    assert outcome_of(GENERATION_ERROR) is Outcome.ERROR and outcome_of(PROCESS_REQUEST_ERROR) is Outcome.ERROR


class SlowWords:
    """Three words, 5 ms apart (slower than the driver's 2 ms hop: one hop, one token count each)."""

    def stream(self, chat_prompt, params=None, should_stop=None):
        for word in ("one ", "two ", "three"):
            time.sleep(0.005)
            yield word


async def test_the_03_endpoint_records_outcomes_rejections_tokens_and_latencies():
    chat_stream, client = await started(chat_generator=SlowWords())
    async with client:
        ok = await client.post("/chat_stream", json={"user_input": "one two three"})
        bad = await client.post("/chat_stream", json={"user_input": 5})
    assert ok.status_code == 200 and ok.text.endswith("<::EOS::>") and bad.status_code == 400
    got = scrape(chat_stream)
    assert count(got, "chatstream_requests_total", outcome="success") == 1
    assert count(got, "chatstream_requests_total", outcome="bad_request") == 1
    assert count(got, "chatstream_request_rejections_total", reason="bad_request") == 1
    assert ok.text.count("<::EOS::>") == 3
    assert got[("chatstream_generation_tokens_total", frozenset({("source", "live")}))] == 3
    assert count(got, "chatstream_time_to_first_token_seconds_count") == 1
    assert count(got, "chatstream_inter_token_latency_seconds_count") == 2
    assert count(got, "chatstream_e2e_request_latency_seconds_count") == 1


async def test_a_full_queue_is_counted_as_a_rejection():
    generator = GatedGenerator()
    chat_stream, client = await started(chat_generator=generator, num_of_concurrent_executions=1,
                                        max_queue_size=1, too_many_request_as_http_error=True)
    async with client:
        first = asyncio.create_task(client.post("/chat_stream", json={"user_input": "a"}))
        second = asyncio.create_task(client.post("/chat_stream", json={"user_input": "b"}))
        while chat_stream.admission.stats()["waiting"] < 1:
            await asyncio.sleep(0.01)
        third = await client.post("/chat_stream", json={"user_input": "c"})
        generator.gate.set()
        await first
        await second
    assert third.status_code == 429
    got = {(k[0], frozenset(x for x in k[1] if x[0] != "source")): v for k, v in scrape(chat_stream).items()}
    key = frozenset({("endpoint", "chat_stream"), ("reason", "queue_full")})
    assert got[("chatstream_request_rejections_total", key)] == 1
    assert got[("chatstream_requests_total", frozenset({("endpoint", "chat_stream"), ("outcome", "rejected")}))] == 1
    assert got[("chatstream_requests_total", frozenset({("endpoint", "chat_stream"), ("outcome", "success")}))] == 2


async def test_the_body_is_parsed_once(monkeypatch):
    import chatstream.serving.turn as turn

    calls = []
    real = turn.parse_chat_request
    monkeypatch.setattr(turn, "parse_chat_request", lambda *a: calls.append(1) or real(*a))
    _, client = await started(use_mock_response=True)
    async with client:
        assert (await client.post("/chat_stream", json={"user_input": "x"})).status_code == 200
    assert calls == [1]


async def test_the_console_turn_runs_on_the_driver_and_keeps_the_conversation():
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"})
    first = [item async for item in chat_stream.handle_console_input("hello there")]
    assert first[0][2] == "begin" and first[-1] == (first[-2][0], "", "end")
    assert {pos for _, _, pos in first[1:-1]} <= {"mid"}
    await _drain(chat_stream.handle_console_input("again"))
    prompt = chat_stream.chat_prompt_for_single_user_on_console
    assert [c.get_message() for c in prompt.chat_contents if c.role == prompt.requester] == ["hello there", "again"]


async def _drain(iterator):
    async for _ in iterator:
        pass


async def test_the_03_endpoint_counts_the_models_prompt_and_generated_tokens_exactly():
    from _probe_support import bundled

    from chatstream.engine.generation import GenerationParams, build_input_ids

    model, tokenizer = bundled()
    chat_stream, client = await started(model=model, tokenizer=tokenizer, device="cpu", temperature=0,
                                        max_new_tokens=24)
    async with client:
        ok = await client.post("/chat_stream", json={"user_input": "Hello"})
    answer = ok.text.split("<::EOS::>")[-2]
    assert answer == "Hello! How can I help you today?"
    prompt = chat_stream.new_chat_prompt()
    prompt.add_requester_msg("Hello")
    prompt.add_responder_msg(None)
    prompt_ids, _ = build_input_ids(prompt, tokenizer, GenerationParams(max_new_tokens=24))
    got = scrape(chat_stream)
    assert got[("chatstream_prompt_tokens_total", frozenset({("source", "live")}))] == len(prompt_ids)
    generated = len(tokenizer(answer, add_special_tokens=False)["input_ids"]) + 1  # and the EOS token
    assert got[("chatstream_generation_tokens_total", frozenset({("source", "live")}))] == generated
    chat_stream.close()


# -- the stream modes: 0.3's whole answer per chunk (the default, byte for byte) and the opt-in delta mode ----

EOS = "<::EOS::>"


class Words:
    """Streams the given words (a literal end marker split across tokens, and one whole)."""

    def __init__(self, *words):
        self.words, self.prompts = words, []

    def stream(self, chat_prompt, params=None, should_stop=None):
        self.prompts.append(chat_prompt.create_prompt())
        yield from self.words


MARKER_WORDS = ("a<", "::", "EOS::>", " <::ESC::>", " end")


def frames(body: str) -> list[str]:
    """The chunks of a /chat_stream body, split as the chat page splits them (first marker first), unescaped."""
    assert body.endswith(EOS)
    out = []
    while body:
        end = body.index(EOS)
        out.append(body[:end].replace("<::ESC::>", "<::"))
        body = body[end + len(EOS):]
    return out


async def test_a_03_client_gets_the_03_protocol_byte_for_byte():
    _, client = await started(chat_generator=Words(*MARKER_WORDS))
    async with client:
        response = await client.post("/chat_stream", json={"user_input": "hi"})
    assert response.status_code == 200
    assert response.text == ("a<" + EOS
                             + "a<::" + EOS
                             + "a<::ESC::>EOS::>" + EOS  # the marker completed across tokens is escaped
                             + "a<::ESC::>EOS::> <::ESC::>ESC::>" + EOS
                             + "a<::ESC::>EOS::> <::ESC::>ESC::> end" + EOS)
    assert frames(response.text)[-1] == "".join(MARKER_WORDS)


async def test_delta_mode_sends_only_the_new_text_and_keeps_the_whole_answer():
    generator = Words(*MARKER_WORDS)
    _, client = await started(chat_generator=generator)
    async with client:
        response = await client.post("/chat_stream", json={"user_input": "hi", "stream_mode": "delta"})
        await client.post("/chat_stream", json={"user_input": "again", "stream_mode": "delta"})
    assert response.status_code == 200
    # a marker split across chunks needs no escape (each chunk ends at the first marker); a whole one does
    assert response.text == "a<" + EOS + "::" + EOS + "EOS::>" + EOS + " <::ESC::>ESC::>" + EOS + " end" + EOS
    assert "".join(frames(response.text)) == "".join(MARKER_WORDS)
    assert "".join(MARKER_WORDS) in generator.prompts[1]  # the history holds the whole answer, as in 0.3 mode


async def test_delta_mode_is_linear_in_the_answer_and_signals_an_empty_answer_alike():
    answer = [f" word{i}" for i in range(2000)]
    _, client = await started(chat_generator=Words(*answer))
    async with client:
        delta = await client.post("/chat_stream", json={"user_input": "hi", "stream_mode": "delta"})
        full = await client.post("/chat_stream", json={"user_input": "hi", "stream_mode": "full"})
    text = "".join(answer)
    assert "".join(frames(delta.text)) == text and frames(full.text)[-1] == text
    assert len(delta.text) == len(text) + len(EOS) * len(answer)  # O(n): the text once, a marker per token
    assert len(full.text) > 500 * len(text)  # 0.3: O(n^2), the answer so far every token
    _, client = await started(chat_generator=Words())
    async with client:
        empty = await client.post("/chat_stream", json={"user_input": "hi", "stream_mode": "delta"})
    assert empty.text == EOS  # no token: one empty chunk, as in the 0.3 mode


async def test_delta_mode_holds_back_text_a_replacement_may_still_change():
    from chatstream.engine.chat_prompt_presets import ChatPromptRinnaJapaneseGPTNeoxInst

    _, client = await started(chat_generator=Words("one<", "NL", ">two", "<N"),
                                        chat_prompt_clazz=ChatPromptRinnaJapaneseGPTNeoxInst)
    async with client:
        delta = await client.post("/chat_stream", json={"user_input": "hi", "stream_mode": "delta"})
        full = await client.post("/chat_stream", json={"user_input": "hi"})
    assert "".join(frames(delta.text)) == frames(full.text)[-1] == "one\ntwo<N"


class InlineWords(Words):
    """Words the driver runs on the loop, all in one batch (a generator that never blocks)."""

    runs_inline = True


async def test_delta_mode_keeps_in_the_history_the_text_it_held_back_until_the_end():
    """A batch whose text is all held back (a replacement may still change it) makes no frame, yet is part of
    the answer: the history must hold it, as the client gets it at the end."""
    from chatstream.engine.chat_prompt_presets import ChatPromptRinnaJapaneseGPTNeoxInst

    for generator, answer in ((InlineWords("Hi"), "Hi"), (Words("Hi"), "Hi"), (InlineWords("abc", "<NL", ">"),
                                                                                    "abc\n")):
        _, client = await started(chat_generator=generator, chat_prompt_clazz=ChatPromptRinnaJapaneseGPTNeoxInst)
        async with client:
            delta = await client.post("/chat_stream", json={"user_input": "hi", "stream_mode": "delta"})
            await client.post("/chat_stream", json={"user_input": "again", "stream_mode": "delta"})
        assert "".join(frames(delta.text)) == answer
        assert f"システム: {answer}<NL>ユーザー: again" in generator.prompts[1], generator.prompts[1]


async def test_an_unknown_stream_mode_is_a_400_that_says_what_to_send():
    _, client = await started(chat_generator=Words("x"))
    async with client:
        response = await client.post("/chat_stream", json={"user_input": "hi", "stream_mode": "deltas"})
    assert response.status_code == 400 and response.json()["error"] == "bad_stream_mode"
    assert '"delta"' in response.json()["detail"]


class _ThreadRecordingGenerator:
    """A generator double that records which thread checked the prompt and which one generated."""

    def __init__(self, words: int = 3, fits: bool = True) -> None:
        self.words, self.fits = words, fits
        self.threads: list[tuple[str, object]] = []
        self.closed = threading.Event()

    def check_prompt(self, chat_prompt, params=None):
        self.threads.append(("check", threading.current_thread()))
        if not self.fits:
            from chatstream.exceptions import PromptTooLongError

            raise PromptTooLongError("the test says it does not fit")

    def stream(self, chat_prompt, params=None, should_stop=None):
        self.threads.append(("stream", threading.current_thread()))
        try:
            for i in range(self.words):
                if should_stop is not None and should_stop():
                    return
                yield f"w{i} "
        finally:
            self.closed.set()


async def test_the_prompt_is_checked_in_the_generations_own_worker_thread(monkeypatch):
    import anyio.to_thread

    hand_overs = []
    real = anyio.to_thread.run_sync
    monkeypatch.setattr(anyio.to_thread, "run_sync", lambda *a, **k: hand_overs.append(a[0]) or real(*a, **k))
    generator = _ThreadRecordingGenerator()
    chat_stream, client = await started(chat_generator=generator)
    async with client:
        reply = await client.post("/chat_stream", json={"user_input": "x"})
    assert reply.text.endswith("w0 w1 w2 <::EOS::>")
    (check, checker), (stream, streamer) = generator.threads
    assert (check, stream) == ("check", "stream")
    assert checker is streamer and checker is not threading.main_thread()  # never on the event loop
    assert len(hand_overs) == 1  # one thread start per turn: the check costs no round trip of its own
    assert chat_stream.admission.stats()["running"] == 0


async def test_a_prompt_that_does_not_fit_is_a_400_and_frees_everything():
    generator = _ThreadRecordingGenerator(fits=False)
    chat_stream, client = await started(chat_generator=generator)
    async with client:
        refused = await client.post("/chat_stream", json={"user_input": "x"})
        assert refused.status_code == 400 and refused.json()["error"] == "input_too_long"
        assert (await client.post("/chat_stream", json={"user_input": "y"})).status_code == 400  # the lock was freed
    assert [kind for kind, _ in generator.threads] == ["check", "check"]  # the model never ran
    assert chat_stream.admission.stats()["running"] == 0
    assert count(scrape(chat_stream), "chatstream_requests_total", outcome="bad_request") == 2


async def test_a_response_never_sent_stops_the_generation_its_check_started():
    import gc

    from starlette.requests import Request

    generator = _ThreadRecordingGenerator(words=100_000)
    chat_stream, _ = await started(chat_generator=generator)
    body = b'{"user_input": "x"}'

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/chat_stream", "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())], "query_string": b""}
    response = await chat_stream.handle_chat_stream_request(Request(scope, receive))
    assert response.status_code == 200 and chat_stream.admission.stats()["running"] == 1
    del response  # dropped without being sent: its close callbacks run on the loop
    gc.collect()
    for _ in range(200):
        if generator.closed.is_set() and chat_stream.admission.stats()["running"] == 0:
            break
        await asyncio.sleep(0.01)
    started_streams = [kind for kind, _ in generator.threads if kind == "stream"]
    assert not started_streams or generator.closed.is_set(), "the generation the check started kept running"
    assert chat_stream.admission.stats()["running"] == 0


async def test_a_handler_with_its_own_generate_gets_the_prompt_checked_apart():
    from chatstream.serving.turn import SimpleSessionRequestHandler

    class OwnGenerate(SimpleSessionRequestHandler):
        async def generate(self, chat_prompt, callback, request=None, params=None, message_id=None):
            async for chunk in super().generate(chat_prompt, callback, None, params, message_id):
                yield chunk.upper()

    generator = _ThreadRecordingGenerator()
    chat_stream, client = await started(chat_generator=generator, request_handler=OwnGenerate())
    async with client:
        reply = await client.post("/chat_stream", json={"user_input": "x"})
    assert reply.text.endswith("W0 W1 W2 <::EOS::>")
    assert [kind for kind, _ in generator.threads] == ["check", "stream"]  # one generation: none left unread
    assert chat_stream.admission.stats()["running"] == 0
