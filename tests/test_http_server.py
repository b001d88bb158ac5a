"""ChatStream over real HTTP: uvicorn on a loopback port, httpx streaming clients."""

import asyncio
import http.cookiejar
import time

import httpx
import pytest
from _serving_fakes import GatedGenerator, SlowModel, word_tokenizer
from fastapi import FastAPI, Request

from chatstream.engine.chat_prompt_presets import ChatPromptChatML
from chatstream.serving.chat_stream import ChatStream
from chatstream.serving.client_roles import client_role_free_access

SECRET = "0123456789abcdef-test"
EOS = "<::EOS::>"


def app_for(chat_stream: ChatStream) -> FastAPI:
    if not chat_stream.client_roles_given:  # the tests read /get_load
        chat_stream.set_client_roles(client_role_free_access)
    app = FastAPI(lifespan=chat_stream.lifespan)
    chat_stream.append_apis(app, {"all": True})
    return app


def client(base_url, share_cookies=True, **kw):
    cookies = None
    if not share_cookies:  # every request is a new browser session
        cookies = httpx.Cookies(http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[])))
    return httpx.AsyncClient(base_url=base_url, timeout=30, cookies=cookies, **kw)


async def load(client_):
    return (await client_.get("/get_load")).json()["chatstream_workers"][0]


async def until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_the_documented_03_minimal_app_works_out_of_the_box(serve):
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"})
    app = FastAPI()

    @app.post("/chat_stream")
    async def stream_api(request: Request):
        return await chat_stream.handle_chat_stream_request(request)

    with pytest.warns(DeprecationWarning, match="on_event"):  # FastAPI's deprecation, not ours

        @app.on_event("startup")
        async def startup():
            await chat_stream.start_queue_worker()

    with httpx.Client(base_url=serve(app), timeout=30) as http_client:
        first = http_client.post("/chat_stream", json={"user_input": "hello world"})
        second = http_client.post("/chat_stream", json={"user_input": "again"})
    assert first.status_code == 200 and first.text.endswith("hello world" + EOS)
    assert second.text.endswith("again" + EOS)
    assert chat_stream.admission.stats()["running"] == 0


async def test_chunks_arrive_while_the_answer_is_generated(serve):
    chat_stream = ChatStream(use_mock_response=True, session_secret=SECRET,
                             mock_params={"type": "echo", "time_per_token_sec": 0.15})
    async with client(serve(app_for(chat_stream))) as http_client:
        started, arrivals, text = time.monotonic(), [], ""
        async with http_client.stream("POST", "/chat_stream", json={"user_input": "one two three four five six"}) as r:
            assert r.headers["x-accel-buffering"] == "no"
            async for piece in r.aiter_text():
                arrivals.append(time.monotonic() - started)
                text += piece
    assert text.endswith("one two three four five six" + EOS)
    assert len(arrivals) >= 3 and arrivals[-1] - arrivals[0] > 0.4, arrivals


async def test_burst_of_200_admits_exactly_7_and_frees_every_slot(serve):
    gated = GatedGenerator()
    chat_stream = ChatStream(chat_generator=gated, num_of_concurrent_executions=2, max_queue_size=5,
                             too_many_request_as_http_error=True, session_secret=SECRET)
    base_url = serve(app_for(chat_stream))
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with client(base_url, share_cookies=False, limits=limits) as http_client:

        async def one(i):
            async with http_client.stream("POST", "/chat_stream", json={"user_input": f"u{i}"}) as response:
                return response.status_code, await response.aread()

        tasks = [asyncio.create_task(one(i)) for i in range(200)]

        async def refused_all_others():
            return sum(t.done() for t in tasks) == 193

        await until(refused_all_others, timeout=60)
        worker = await load(http_client)
        assert (worker["running"], worker["waiting"]) == (2, 5)

        async def both_generating():
            return gated.active == 2

        await until(both_generating)
        gated.gate.set()
        results = await asyncio.gather(*tasks)
        statuses = [status for status, _ in results]
        assert statuses.count(200) == 7 and statuses.count(429) == 193
        assert all(body.endswith(b"w0 w1 w2" + EOS.encode()) for status, body in results if status == 200)
        assert gated.peak == 2, "never more than num_of_concurrent_executions generating"
        worker = await load(http_client)
        assert (worker["running"], worker["waiting"]) == (0, 0)
    assert chat_stream.admission.stats()["running"] == 0 and gated.active == 0


async def test_requests_are_served_in_arrival_order(serve):
    gated = GatedGenerator(words=1)
    chat_stream = ChatStream(chat_generator=gated, num_of_concurrent_executions=1, max_queue_size=3,
                             session_secret=SECRET)
    async with client(serve(app_for(chat_stream)), share_cookies=False) as http_client:
        tasks = []
        for i, name in enumerate("ABCD"):
            tasks.append(asyncio.create_task(http_client.post("/chat_stream", json={"user_input": name})))

            async def placed(i=i):
                return (await load(http_client))["waiting"] == i

            await until(placed)
        gated.gate.set()
        assert [r.status_code for r in await asyncio.gather(*tasks)] == [200] * 4
    assert gated.started == ["A", "B", "C", "D"]


async def test_a_client_leaving_the_queue_frees_its_place_at_once(serve):
    gated = GatedGenerator(words=1)
    chat_stream = ChatStream(chat_generator=gated, num_of_concurrent_executions=1, max_queue_size=1,
                             too_many_request_as_http_error=True, session_secret=SECRET)
    async with client(serve(app_for(chat_stream)), share_cookies=False) as http_client:
        running = asyncio.create_task(http_client.post("/chat_stream", json={"user_input": "A"}))
        await until(lambda: _equals(load(http_client), "running", 1))
        leaving = asyncio.create_task(http_client.post("/chat_stream", json={"user_input": "B"}))
        await until(lambda: _equals(load(http_client), "waiting", 1))
        refused = await http_client.post("/chat_stream", json={"user_input": "X"})
        assert refused.status_code == 429
        leaving.cancel()  # httpx drops the connection
        await until(lambda: _equals(load(http_client), "waiting", 0), timeout=2)
        staying = asyncio.create_task(http_client.post("/chat_stream", json={"user_input": "C"}))
        await until(lambda: _equals(load(http_client), "waiting", 1))
        gated.gate.set()
        assert (await running).status_code == (await staying).status_code == 200
    assert gated.started == ["A", "C"], "the request that left never reached the model"
    assert chat_stream.admission.stats()["running"] == 0


async def _equals(load_coroutine, key, value):
    return (await load_coroutine)[key] == value


def slow_chat_stream(model_delay, **kwargs):
    tokenizer = word_tokenizer()
    model = SlowModel(tokenizer, delay=model_delay)
    chat_stream = ChatStream(model=model, tokenizer=tokenizer, device="cpu", chat_prompt_clazz=ChatPromptChatML,
                             session_secret=SECRET, **kwargs)
    return chat_stream, model


async def history(http_client):
    data = (await http_client.get("/get_prompt")).json()
    return [(c["role"], c["message"]) for c in data["history"]["chat_contents"]] if data["prompt"] else []


async def test_disconnect_while_streaming_stops_the_model_within_a_step(serve):
    chat_stream, model = slow_chat_stream(0.05, max_new_tokens=400, num_of_concurrent_executions=1, max_queue_size=1)
    async with client(serve(app_for(chat_stream))) as http_client:
        seen = ""
        async with http_client.stream("POST", "/chat_stream", json={"user_input": "hello"}) as response:
            async for piece in response.aiter_text():
                seen += piece
                if seen.count(EOS) >= 3:
                    break
        calls_at_disconnect = model.calls
        await until(lambda: _equals(load(http_client), "running", 0), timeout=2)
        await asyncio.sleep(0.3)
        assert model.calls <= calls_at_disconnect + 2, "generation stopped within a decode step"
        turn = await history(http_client)
        assert turn[0] == ("user", "hello") and turn[1][0] == "assistant"
        assert turn[1][1].split()[:3] == ["alpha", "beta", "gamma"], "the partial answer is kept, as in 0.3"
        async with http_client.stream("POST", "/chat_stream", json={"user_input": "more"}) as response:
            assert response.status_code == 200, "the freed slot serves the next request"
            async for piece in response.aiter_text():
                if EOS in piece:
                    break


async def test_a_model_failing_mid_generation_ends_the_stream_and_changes_nothing(serve):
    chat_stream, model = slow_chat_stream(0.0, max_new_tokens=5)
    async with client(serve(app_for(chat_stream))) as http_client:
        first = await http_client.post("/chat_stream", json={"user_input": "one"})
        assert first.text.endswith("alpha beta gamma delta epsilon" + EOS)
        before = await history(http_client)
        model.fail_at = model.calls + 3
        received = ""
        with pytest.raises(httpx.RemoteProtocolError):
            async with http_client.stream("POST", "/chat_stream", json={"user_input": "two"}) as response:
                assert response.status_code == 200
                async for piece in response.aiter_text():
                    received += piece
        assert received.count(EOS) == 2, "what was generated before the failure was sent"
        assert (await load(http_client))["running"] == 0
        assert await history(http_client) == before
        model.fail_at = None
        third = await http_client.post("/chat_stream", json={"user_input": "three"})
        assert third.status_code == 200 and len(await history(http_client)) == 4


async def test_the_event_loop_stays_responsive_while_the_model_generates(serve):
    # 1 s a forward: were the loop blocked by a step, each /health would wait for one (5 in a row: ~5 s), while
    # on a free loop the 5 take milliseconds, even on a loaded machine; a bound of one step tells them apart
    chat_stream, _ = slow_chat_stream(1.0, max_new_tokens=4)
    async with client(serve(app_for(chat_stream))) as http_client:
        generation = asyncio.create_task(http_client.post("/chat_stream", json={"user_input": "go"}))
        await until(lambda: _equals(load(http_client), "running", 1))
        latencies = []
        for _ in range(5):
            started = time.monotonic()
            assert (await http_client.get("/health")).status_code == 200
            latencies.append(time.monotonic() - started)
        assert not generation.done()
        assert sum(latencies) < 1.0, latencies
        assert (await generation).status_code == 200


async def test_disconnect_during_a_long_step_frees_the_slot_at_once(serve):
    """The stop request reaches a generator that is still inside its step (here: a 30 s first-token wait)."""
    chat_stream = ChatStream(use_mock_response=True, session_secret=SECRET, num_of_concurrent_executions=1,
                             mock_params={"type": "echo", "initial_wait_sec": 30})
    async with client(serve(app_for(chat_stream))) as http_client:
        async with http_client.stream("POST", "/chat_stream", json={"user_input": "never sent"}) as response:
            assert response.status_code == 200
            await until(lambda: _equals(load(http_client), "running", 1))
        started = time.monotonic()
        await until(lambda: _equals(load(http_client), "running", 0), timeout=10)
        assert time.monotonic() - started < 10  # far below the 30 s step it did not wait for
        chat_stream.chat_generator.initial_wait_sec = 0
        again = await http_client.post("/chat_stream", json={"regenerate": True})
        assert again.text.endswith("never sent" + EOS), "the slot serves the next request"


async def test_a_second_request_of_a_session_that_leaves_while_waiting_for_the_first_frees_its_slot(serve):
    gated = GatedGenerator(words=1)
    chat_stream = ChatStream(chat_generator=gated, num_of_concurrent_executions=2, max_queue_size=1,
                             session_secret=SECRET)
    async with client(serve(app_for(chat_stream))) as http_client:
        await http_client.get("/get_load")  # one session for both requests
        first = asyncio.create_task(http_client.post("/chat_stream", json={"user_input": "one"}))
        await until(lambda: _equals(load(http_client), "running", 1))
        second = asyncio.create_task(http_client.post("/chat_stream", json={"user_input": "two"}))
        await until(lambda: _equals(load(http_client), "running", 2))  # admitted, waiting for the session
        second.cancel()
        await until(lambda: _equals(load(http_client), "running", 1), timeout=2)
        gated.gate.set()
        assert (await first).status_code == 200
        assert await history(http_client) == [("user", "one"), ("assistant", "w0")]
    assert gated.started == ["one"] and chat_stream.admission.stats()["running"] == 0
