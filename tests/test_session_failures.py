"""A turn whose session store fails: 503 with Retry-After before the first byte, nothing half-written,
/health says so, the store is used again once it is back; a commit that fails rolls the turn back."""

import sqlite3

import httpx
from fastapi import FastAPI

from chatstream.exceptions import SessionStoreUnavailable
from chatstream.serving.chat_stream import ChatStream
from chatstream.serving.session_stores.sqlite import SqliteSessionStore

SECRET = "a session secret long enough for tests"
EOS = "<::EOS::>"


def app_for(chat_stream):
    app = FastAPI(lifespan=chat_stream.lifespan)
    chat_stream.append_apis(app, {"all": True})
    return app


def history(store_value):
    return [c["message"] for c in store_value["chat_prompt"]["__chatstream_prompt__"]["chat_contents"]]


async def test_a_locked_sqlite_file_gives_503_then_the_store_recovers(tmp_path):
    store = SqliteSessionStore(tmp_path / "s.sqlite3", busy_timeout_sec=0.2)
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"}, session_secret=SECRET,
                             session_store=store)
    async with chat_stream.lifespan(), httpx.AsyncClient(transport=httpx.ASGITransport(app=app_for(chat_stream)),
                                                         base_url="http://t") as client:
        assert (await client.post("/chat_stream", json={"user_input": "one"})).text.endswith(EOS)
        locker = sqlite3.connect(tmp_path / "s.sqlite3", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # another process holds the file's write lock
        try:
            refused = await client.post("/chat_stream", json={"user_input": "two"})
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
            assert refused.json()["error"] == "session_store_unavailable"
            health = await client.get("/health")
            assert health.status_code == 503 and health.json()["session_store"]["ok"] is False
            assert chat_stream.admission.running == 0, "the slot was given back"
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert (await client.get("/health")).status_code == 200
        assert (await client.post("/chat_stream", json={"user_input": "three"})).text.endswith(EOS)
        (stored,) = [value for value in [await store.load(row) for row in await _ids(store)] if "chat_prompt" in value]
        assert history(stored) == ["one", "one", "three", "three"], "the refused turn left no trace"
    assert 'outcome="session_store_unavailable"' in chat_stream.metrics.render().decode()


async def _ids(store):
    return await store._run(lambda conn: [row[0] for row in conn.execute("SELECT id FROM sessions")])


class FailingCommits(SqliteSessionStore):
    fail = False

    async def save_if(self, session_id, data, revision):
        if self.fail:
            raise SessionStoreUnavailable("the store went away")
        return await super().save_if(session_id, data, revision)


async def test_a_commit_that_fails_rolls_the_turn_back_and_the_stream_does_not_look_complete(tmp_path):
    store = FailingCommits(tmp_path / "s.sqlite3")
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"}, session_secret=SECRET,
                             session_store=store)
    async with chat_stream.lifespan(), httpx.AsyncClient(transport=httpx.ASGITransport(app=app_for(chat_stream)),
                                                         base_url="http://t") as client:
        assert (await client.post("/chat_stream", json={"user_input": "one"})).text.endswith(EOS)
        store.fail = True
        failed = False
        try:
            await client.post("/chat_stream", json={"user_input": "two"})
        except Exception:  # the response ended abnormally
            failed = True
        assert failed
        store.fail = False
        assert chat_stream.admission.running == 0
        (stored,) = [await store.load(row) for row in await _ids(store)]
        assert history(stored) == ["one", "one"]
