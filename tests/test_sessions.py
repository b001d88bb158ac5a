import asyncio
import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chatstream.engine.chat_prompt_presets import ChatPromptChatML
from chatstream.exceptions import ConfigurationError
from chatstream.serving.sessions import (
    PROMPT_KEY,
    SESSION_COOKIE_NAME,
    MemorySessionStore,
    SessionManager,
    SessionStore,
    process_secret,
)

SECRET = "an application secret of enough length"


def counter_app(manager: SessionManager) -> Starlette:
    async def count(request: Request):
        session = await manager.open(request)
        await session.update(count=session.data.get("count", 0) + 1)
        response = JSONResponse({"count": session.data["count"], "id": session.session_id})
        manager.attach(response, session)
        return response

    return Starlette(routes=[Route("/", count)])


async def get(client, **kw):
    return await client.get("/", **kw)


def client_for(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_cookie_is_signed_httponly_lax_and_keeps_the_session():
    manager = SessionManager(secret=SECRET)
    async with client_for(counter_app(manager)) as client:
        first = await get(client)
        cookie = first.headers["set-cookie"]
        assert cookie.startswith(SESSION_COOKIE_NAME + "=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
        second = await get(client)
        assert second.json() == {"count": 2, "id": first.json()["id"]}
        assert "set-cookie" not in second.headers  # only new sessions get a cookie


async def test_secure_flag_when_configured():
    manager = SessionManager(secret=SECRET, secure=True)
    async with client_for(counter_app(manager)) as client:
        assert "Secure" in (await get(client)).headers["set-cookie"]


async def test_tampered_or_foreign_cookie_starts_a_new_session():
    manager = SessionManager(secret=SECRET)
    async with client_for(counter_app(manager)) as client:
        first = await get(client)
        value = first.cookies[SESSION_COOKIE_NAME]
        session_id = first.json()["id"]
        client.cookies.clear()
        forged = SessionManager(secret="another secret of enough length")._signer.sign(session_id).decode()
        for bad in (value[:-2] + "xx", session_id, forged):
            client.cookies.clear()
            response = await get(client, headers={"cookie": f"{SESSION_COOKIE_NAME}={bad}"})
            assert response.json()["count"] == 1 and response.json()["id"] != session_id


async def test_random_secret_warns_once_and_is_not_a_constant(caplog):
    manager = SessionManager(logger=logging.getLogger("chatstream.test"), random_secret_warning="RANDOM SECRET")
    with caplog.at_level(logging.WARNING, logger="chatstream.test"):
        async with client_for(counter_app(manager)) as client:
            await get(client)
            client.cookies.clear()
            await get(client)
    assert [r.message for r in caplog.records].count("RANDOM SECRET") == 1
    assert len(process_secret()) >= 32
    assert process_secret() == process_secret()


def test_short_secret_and_foreign_store_are_refused():
    with pytest.raises(ConfigurationError, match="at least 16"):
        SessionManager(secret="short")
    with pytest.raises(ConfigurationError, match="SessionStore"):
        SessionManager(store={})


async def test_memory_store_is_json_only_bounded_and_expires():
    now = [0.0]
    store = MemorySessionStore(max_sessions=2, idle_timeout_sec=10, clock=lambda: now[0])
    await store.save("a", {"x": [1, 2]})
    loaded = await store.load("a")
    loaded["x"].append(3)
    assert await store.load("a") == {"x": [1, 2]}, "the store hands out copies"
    with pytest.raises(TypeError):
        await store.save("b", {"prompt": object()})
    await store.save("b", {})
    await store.load("a")  # "a" is now the most recently used
    await store.save("c", {})
    assert await store.load("b") is None and await store.load("a") is not None
    now[0] = 11
    assert await store.load("a") is None
    assert len(store) == 1


async def test_live_prompts_are_saved_as_json_and_updates_keep_other_keys():
    manager = SessionManager(secret=SECRET)
    request = Request({"type": "http", "headers": [], "state": {}})
    session = await manager.open(request)
    assert request.state.session is session and manager.current(request) is session
    other_view = await SessionManager(manager.store, SECRET).open(Request({"type": "http", "headers": [], "state": {}}))
    other_view.session_id = session.session_id
    prompt = ChatPromptChatML()
    prompt.add_requester_msg("hi")
    await session.update(chat_prompt=prompt)
    await other_view.update(generation_params={"temperature": 0.5})
    stored = await manager.store.load(session.session_id)
    assert stored["chat_prompt"][PROMPT_KEY]["chat_contents"] == [{"role": "user", "message": "hi"}]
    assert stored["generation_params"] == {"temperature": 0.5}
    assert session.get_session()["chat_prompt"] is prompt
    await session.remove("chat_prompt")
    assert await manager.store.load(session.session_id) == {"generation_params": {"temperature": 0.5}}


async def test_one_lock_per_session():
    manager = SessionManager(secret=SECRET)
    assert manager.lock("a") is manager.lock("a")
    assert manager.lock("a") is not manager.lock("b")
    order = []

    async def turn(name):
        async with manager.lock("s"):
            order.append(name + "+")
            await asyncio.sleep(0.01)
            order.append(name + "-")

    await asyncio.gather(turn("1"), turn("2"))
    assert order == ["1+", "1-", "2+", "2-"]


async def test_a_replacement_store_is_used():
    class RecordingStore(SessionStore):
        def __init__(self):
            self.data = {}

        async def load(self, session_id):
            return self.data.get(session_id)

        async def save(self, session_id, data):
            self.data[session_id] = data

        async def delete(self, session_id):
            self.data.pop(session_id, None)

    store = RecordingStore()
    manager = SessionManager(secret=SECRET)
    manager.configure(store=store)
    async with client_for(counter_app(manager)) as client:
        response = await get(client)
    assert store.data == {response.json()["id"]: {"count": 1}}


async def test_a_session_lock_is_free_only_when_acquire_would_not_wait():
    from chatstream.serving.sessions import SessionLock

    lock = SessionLock(asyncio.Lock(), lambda: None)
    assert lock.free()
    await lock.acquire()
    assert not lock.free()
    waiter = asyncio.ensure_future(lock.acquire())
    await asyncio.sleep(0)
    lock.release()
    assert not lock.free()  # released, but the queued request takes it next: a newcomer would wait
    await waiter
    lock.release()
    assert lock.free()
    assert not SessionLock(asyncio.Lock(), lambda: object()).free()  # a store's lease may make acquire() wait


@pytest.mark.parametrize(("secure", "max_age"), [(False, None), (True, None), (True, 3600)])
def test_the_session_cookie_is_the_header_set_cookie_writes(secure, max_age):
    from starlette.responses import Response

    from chatstream.serving.sessions import HttpSession, SessionManager

    manager = SessionManager(secret="a-session-secret-of-some-length", secure=secure, max_age_sec=max_age)
    attached, expected = Response(), Response()
    manager.attach(attached, HttpSession(manager.store, "Ab_-09", {}, is_new=True))
    signed = attached.raw_headers[-1][1].split(b";")[0].split(b"=", 1)[1].decode()
    assert manager._signer.unsign(signed, max_age=max_age) == b"Ab_-09"
    expected.set_cookie("chatstream_session", signed, max_age=max_age, path="/", secure=secure, httponly=True,
                        samesite="lax")
    assert attached.raw_headers[-1] == expected.raw_headers[-1]
