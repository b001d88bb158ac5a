import asyncio
import threading
import time

import httpx
import pytest
from _serving_fakes import GatedGenerator, SlowModel, word_tokenizer
from fastapi import FastAPI, Request
from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse

from chatstream.engine.chat_prompt_presets import ChatPromptChatML
from chatstream.exceptions import ConfigurationError
from chatstream.serving._http import ChatStreamingResponse
from chatstream.serving.chat_stream import ChatStream
from chatstream.serving.client_roles import client_role_free_access
from chatstream.serving.turn import AbstractRequestHandler, SimpleSessionRequestHandler


class ListGenerator:
    """Yields ``deltas``; raises after ``fail_after`` of them when set; records whether it was closed."""

    def __init__(self, deltas, fail_after=None):
        self.deltas, self.fail_after, self.closed = deltas, fail_after, 0

    def stream(self, chat_prompt, params=None, should_stop=None):
        try:
            for i, delta in enumerate(self.deltas):
                if self.fail_after is not None and i == self.fail_after:
                    raise RuntimeError("boom")
                yield delta
        finally:
            self.closed += 1


def open_prompt(text="hi"):
    prompt = ChatPromptChatML()
    prompt.add_requester_msg(text)
    prompt.add_responder_msg(None)
    return prompt


def handler_with(generator):
    handler = SimpleSessionRequestHandler()
    handler.chat_generator = generator
    return handler


async def collect(handler, prompt):
    messages = []

    async def finished(message):
        messages.append(message)

    chunks = [chunk async for chunk in handler.generate(prompt, finished)]
    return chunks, messages


async def test_generate_sends_the_whole_answer_so_far_each_time():
    generator = ListGenerator(["Hel", "lo", " you"])
    prompt = open_prompt()
    chunks, messages = await collect(handler_with(generator), prompt)
    assert chunks == ["Hel<::EOS::>", "Hello<::EOS::>", "Hello you<::EOS::>"]
    assert messages == ["success"] and generator.closed == 1
    assert prompt.get_responder_last_msg() == "Hello you"


async def test_generate_applies_the_prompts_output_replacements():
    class Replacing(ChatPromptChatML):
        def get_replacement_when_output(self):
            return [("<NL>", "\n")]

    prompt = Replacing()
    prompt.add_requester_msg("x")
    prompt.add_responder_msg(None)
    chunks, _ = await collect(handler_with(ListGenerator(["a<N", "L>b"])), prompt)
    assert chunks[-1] == "a\nb<::EOS::>"


async def test_generation_error_is_reraised_after_the_callback_and_close():
    generator = ListGenerator(["a", "b", "c"], fail_after=2)
    messages = []

    async def finished(message):
        messages.append(message)

    chunks = []
    with pytest.raises(RuntimeError, match="boom"):
        async for chunk in handler_with(generator).generate(open_prompt(), finished):
            chunks.append(chunk)
    assert chunks == ["a<::EOS::>", "ab<::EOS::>"]
    assert messages == ["unknown_error_occurred,while chat_generator.generate"] and generator.closed == 1


async def test_cancelled_stream_closes_the_model_iterator_and_reports_a_disconnect():
    generator = GatedGenerator()
    messages = []

    async def finished(message):
        messages.append(message)

    async def consume():
        async for _ in handler_with(generator).generate(open_prompt(), finished):
            pass

    task = asyncio.create_task(consume())
    for _ in range(1000):  # poll (up to 10 s) until the generator runs
        if generator.active:
            break
        await asyncio.sleep(0.01)
    assert generator.active == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert messages == ["client_disconnected_while_streaming"]
    assert generator.active == 0, "the stop request reached the generator and its iterator was closed"


def test_each_chat_stream_gets_its_own_default_handler_and_a_handler_serves_one():
    first, second = ChatStream(use_mock_response=True), ChatStream(use_mock_response=True)
    assert first.request_handler is not second.request_handler
    shared = SimpleSessionRequestHandler()
    ChatStream(use_mock_response=True, request_handler=shared)
    with pytest.raises(ConfigurationError, match="another ChatStream"):
        ChatStream(use_mock_response=True, request_handler=shared)
    with pytest.raises(ConfigurationError, match="AbstractRequestHandler"):
        ChatStream(use_mock_response=True, request_handler=object())


async def started_app(**kwargs):
    chat_stream = ChatStream(session_secret="0123456789abcdef-test", client_roles=client_role_free_access, **kwargs)
    app = FastAPI()
    chat_stream.append_apis(app, {"all": True})
    await chat_stream.start_queue_worker()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    return chat_stream, client


async def history(client):
    data = (await client.get("/get_prompt")).json()
    return [(c["role"], c["message"]) for c in data["history"]["chat_contents"]] if data["prompt"] else []


async def test_two_requests_of_one_session_never_interleave():
    gated = GatedGenerator(words=2)
    _, client = await started_app(chat_generator=gated, num_of_concurrent_executions=2)
    async with client:
        await client.get("/get_load")  # gets the session cookie
        first = asyncio.create_task(client.post("/chat_stream", json={"user_input": "one"}))
        while not gated.started:
            await asyncio.sleep(0.01)
        second = asyncio.create_task(client.post("/chat_stream", json={"user_input": "two"}))
        await asyncio.sleep(0.2)
        assert gated.started == ["one"], "the second turn waits for the first to finish"
        gated.gate.set()
        await asyncio.gather(first, second)
        assert gated.peak == 1
        assert await history(client) == [("user", "one"), ("assistant", "w0 w1"),
                                         ("user", "two"), ("assistant", "w0 w1")]


async def test_a_failed_turn_leaves_the_history_as_it_was():
    generator = ListGenerator(["fine", " answer"])
    chat_stream, client = await started_app(chat_generator=generator)
    async with client:
        assert (await client.post("/chat_stream", json={"user_input": "first"})).status_code == 200
        before = await history(client)
        generator.fail_after = 1
        with pytest.raises(RuntimeError, match="boom"):
            await client.post("/chat_stream", json={"user_input": "second"})
        assert await history(client) == before == [("user", "first"), ("assistant", "fine answer")]
        assert chat_stream.admission.stats()["running"] == 0
        generator.fail_after = None
        regenerated = await client.post("/chat_stream", json={"regenerate": True})
        assert regenerated.text.endswith("fine answer<::EOS::>")
        assert await history(client) == before


async def test_regenerate_replaces_the_last_answer_and_needs_one():
    chat_stream, client = await started_app(use_mock_response=True)
    async with client:
        refused = await client.post("/chat_stream", json={"regenerate": True})
        assert refused.status_code == 400 and refused.json()["error"] == "nothing_to_regenerate"
        await client.post("/chat_stream", json={"user_input": "q"})
        chat_stream.chat_generator.mock_type = "echo"
        await client.post("/chat_stream", json={"user_input": "ignored", "regenerate": True})
        assert await history(client) == [("user", "q"), ("assistant", "q")]


async def test_a_03_style_custom_handler_still_works_and_frees_its_slot():
    class EchoHandler(AbstractRequestHandler):
        async def process_request(self, request, request_body, streaming_finished_callback):
            prompt = self.chat_prompt_clazz()
            prompt.add_requester_msg("custom")
            prompt.add_responder_msg(None)

            async def finished(message):
                await streaming_finished_callback(request, message)

            return StreamingResponse(self.generate(prompt, finished), media_type="text/plain")

    chat_stream, client = await started_app(use_mock_response=True, mock_params={"type": "echo"},
                                            request_handler=EchoHandler())
    async with client:
        response = await client.post("/chat_stream", json={"user_input": "x"})
    assert response.text.endswith("custom<::EOS::>")
    assert response.headers["X-Accel-Buffering"] == "no"
    assert chat_stream.admission.stats()["running"] == 0


async def test_a_handler_that_raises_gets_a_500_and_frees_its_slot():
    class Broken(AbstractRequestHandler):
        async def process_request(self, request, request_body, streaming_finished_callback):
            raise KeyError("oops")

    messages = []
    chat_stream = ChatStream(use_mock_response=True, request_handler=Broken(), session_secret="0123456789abcdef-t")
    app = FastAPI()

    @app.post("/chat_stream")
    async def stream_api(request: Request):
        return await chat_stream.handle_chat_stream_request(request, callback=lambda r, m: messages.append(m))

    await chat_stream.start_queue_worker()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.post("/chat_stream", json={"user_input": "x"})
    assert response.status_code == 500 and response.json()["error"] == "internal_server_error"
    assert chat_stream.admission.stats()["running"] == 0
    assert messages == ["unknown_error_occurred,while process_request"]


async def stream_until_the_connection_breaks(generator, prompt, breaks_at):
    """``generate`` through a ChatStreamingResponse whose ``breaks_at``-th send raises (the client is gone; ASGI 2.4
    servers report it so): (the finish messages, the messages sent, the last being the one that broke)."""
    messages, sent = [], []

    async def finished(message):
        messages.append(message)

    response = ChatStreamingResponse(handler_with(generator).generate(prompt, finished))

    async def send(message):
        sent.append(message)
        if len(sent) == breaks_at:
            raise OSError("connection reset by peer")

    async def receive():
        await asyncio.sleep(3600)

    with pytest.raises(ClientDisconnect):
        await response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)
    return messages, sent


async def test_a_send_failure_closes_the_stream_at_once_and_keeps_the_partial_answer():
    """The client is gone while a chunk is being sent: the generator, suspended at its yield, is closed right away
    instead of whenever the garbage collector finds it."""
    generator = ListGenerator(["a", "b", "c"])
    prompt = open_prompt()
    messages, _ = await stream_until_the_connection_breaks(generator, prompt, 3)  # start, first chunk, then breaks
    assert messages == ["client_disconnected_while_streaming"] and generator.closed == 1
    assert prompt.get_responder_last_msg() == "ab"


async def test_a_client_that_leaves_in_the_middle_of_a_batch_keeps_the_answer_as_far_as_it_was_sent():
    """An inline generator hands its tokens over in batches whose frames are made before they are sent: the
    history must still end where the stream did, not at the end of the batch."""
    generator = ListGenerator([f"w{i} " for i in range(100)])
    generator.runs_inline = True  # the driver runs it on the loop, in batches of many tokens
    prompt = open_prompt()
    # start, ten chunks, then the connection breaks on the eleventh
    messages, sent = await stream_until_the_connection_breaks(generator, prompt, 12)
    assert messages == ["client_disconnected_while_streaming"] and generator.closed == 1
    assert prompt.get_responder_last_msg() == "".join(f"w{i} " for i in range(11)) == sent[-1]["body"].decode()[:-9]


class ParamsRecorder:
    def __init__(self):
        self.params = []

    def stream(self, chat_prompt, params=None, should_stop=None):
        self.params.append(params)
        yield "ok"


async def test_generate_takes_03_dict_params_as_overrides_of_the_servers():
    recorder = ParamsRecorder()
    chat_stream = ChatStream(chat_generator=recorder, temperature=0.7, top_k=40)
    handler = chat_stream.request_handler

    async def finished(message):
        pass

    custom = {"temperature": None, "top_k_value": 5, "top_p_value": 0.9}  # what 0.3 kept in the session
    assert [c async for c in handler.generate(open_prompt(), finished, None, custom)] == ["ok<::EOS::>"]
    assert [c async for c in handler.generate(open_prompt(), finished, None, None)] == ["ok<::EOS::>"]
    first, second = recorder.params
    assert (first.temperature, first.top_k, first.top_p) == (0.7, 5, 0.9)
    assert second is None, "None: the generator uses ChatStream's parameters"


async def test_the_prompt_length_check_runs_off_the_event_loop():
    class SlowCheck(GatedGenerator):
        def check_prompt(self, chat_prompt, params=None):
            checking.set()
            time.sleep(1.0)  # a long history being tokenized
            checked.append(time.monotonic())

    checking, checked = threading.Event(), []
    generator = SlowCheck(words=1)
    generator.gate.set()
    _, client = await started_app(chat_generator=generator)
    async with client:
        chat = asyncio.create_task(client.post("/chat_stream", json={"user_input": "x"}))
        while not checking.is_set():
            await asyncio.sleep(0.01)
        assert (await client.get("/health")).status_code == 200
        assert not checked, "/health was answered while the check ran"
        assert (await chat).text == "w0<::EOS::>"


async def test_an_input_the_real_tokenizer_cannot_fit_is_refused_before_the_model_runs():
    tokenizer = word_tokenizer()
    model = SlowModel(tokenizer)
    chat_stream, client = await started_app(model=model, tokenizer=tokenizer, device="cpu", context_len=24,
                                            max_new_tokens=4, chat_prompt_clazz=ChatPromptChatML)
    async with client:
        fits = await client.post("/chat_stream", json={"user_input": "alpha beta"})
        assert fits.text.endswith("alpha beta gamma delta<::EOS::>")
        before = await history(client)
        refused = await client.post("/chat_stream", json={"user_input": "alpha " * 30})
        assert refused.status_code == 400 and refused.json()["error"] == "input_too_long"
        assert "context_len" in refused.json()["detail"]
        assert await history(client) == before
    assert model.calls == 4 and chat_stream.admission.stats()["running"] == 0


async def test_bad_custom_params_end_the_stream_with_the_error_callback():
    messages = []

    async def finished(message):
        messages.append(message)

    chat_stream = ChatStream(chat_generator=ListGenerator(["a"]))
    with pytest.raises(ConfigurationError, match="top_k"):
        async for _ in chat_stream.request_handler.generate(open_prompt(), finished, None, {"top_k_value": "many"}):
            pass
    assert messages == ["unknown_error_occurred,while chat_generator.generate"]
