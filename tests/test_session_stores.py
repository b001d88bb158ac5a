"""The session stores, each against the same contract: JSON values with a format field (older ones load,
newer ones are refused), revision-checked writes, leases that exclude and run out, URLs, failures."""

import asyncio
import json
import logging
import sqlite3

import pytest
from _servers import NEEDS_REDIS, redis_server

from chatstream.exceptions import ConfigurationError, SessionStoreError, SessionStoreUnavailable
from chatstream.serving.session_stores import MemorySessionStore, default_sqlite_path, open_session_store
from chatstream.serving.session_stores.base import FORMAT_VERSION, decode_value, encode_value
from chatstream.serving.session_stores.redis import RedisSessionStore, redact_url
from chatstream.serving.session_stores.sqlite import SqliteSessionStore
from chatstream.serving.sessions import SessionManager


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    if NEEDS_REDIS.args[0]:
        pytest.skip(NEEDS_REDIS.kwargs["reason"])
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request, tmp_path):
    if request.param == "memory":
        made = MemorySessionStore()
    elif request.param == "sqlite":
        made = SqliteSessionStore(tmp_path / "s.sqlite3", lease_sec=0.3)
    else:
        made = RedisSessionStore(request.getfixturevalue("redis_url"), prefix=f"t{id(request)}:", lease_sec=0.3)
    yield made
    await made.aclose()


async def test_values_round_trip_and_revisions_refuse_stale_writes(store):
    assert await store.load_revision("a") == (None, 0)
    assert await store.save_if("a", {"x": 1, "text": "日本語"}, 0)
    data, revision = await store.load_revision("a")
    assert data == {"x": 1, "text": "日本語"} and revision >= 1
    assert not await store.save_if("a", {"x": 2}, revision - 1), "a write based on stale data is refused"
    assert await store.load("a") == {"x": 1, "text": "日本語"}, "and wrote nothing"
    assert await store.save_if("a", {"x": 3}, revision)
    assert await store.load_revision("a") == ({"x": 3}, revision + 1)
    await store.save("a", {"x": 4})
    assert (await store.load_revision("a"))[1] == revision + 2, "a plain save moves the revision too"
    await store.delete("a")
    assert await store.load("a") is None


async def test_a_value_that_is_not_json_is_refused_and_nothing_is_written(store):
    await store.save("a", {"x": 1})
    with pytest.raises(TypeError):
        await store.save("a", {"x": object()})
    assert await store.load("a") == {"x": 1}


async def test_leases_exclude_each_other_and_a_dead_holders_lease_runs_out(store):
    first, second = store.lease("s"), store.lease("s")
    if first is None:
        assert isinstance(store, MemorySessionStore), "only the one-process store has no lease"
        return
    await first.acquire()
    waiting = asyncio.ensure_future(second.acquire())
    await asyncio.sleep(0.6)  # two lease periods: the holder's renewals keep it
    assert not waiting.done(), "a renewed lease is not taken"
    await first.release()
    await asyncio.wait_for(waiting, 2)
    second._renewer.cancel()  # the holder dies: nobody renews its lease any more
    third = store.lease("s")
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(third.acquire(), 3)
    assert asyncio.get_running_loop().time() - started < 1.5, "a dead holder's lease runs out within lease_sec"
    await third.release()


def test_the_stored_value_has_a_format_and_an_older_value_still_loads():
    assert json.loads(encode_value({"a": 1})) == {"format": FORMAT_VERSION, "data": {"a": 1}}
    assert decode_value('{"chat_prompt": {"x": 1}}') == {"chat_prompt": {"x": 1}}, "0.x: the bare dict"
    with pytest.raises(SessionStoreError, match="newer than this ChatStream"):
        decode_value(json.dumps({"format": FORMAT_VERSION + 1, "data": {}}))


async def test_sqlite_loads_a_row_written_before_the_format_field(tmp_path):
    store = SqliteSessionStore(tmp_path / "s.sqlite3")
    await store.check()
    with sqlite3.connect(tmp_path / "s.sqlite3") as conn:
        conn.execute("INSERT INTO sessions VALUES ('old', '{\"role\": \"admin\"}', 3, strftime('%s','now'))")
    assert await store.load_revision("old") == ({"role": "admin"}, 3)


async def test_sqlite_is_shared_by_two_stores_on_one_file_and_survives_reopening(tmp_path):
    one, two = SqliteSessionStore(tmp_path / "s.sqlite3"), SqliteSessionStore(tmp_path / "s.sqlite3")
    assert await one.save_if("a", {"n": 1}, 0)
    assert not await two.save_if("a", {"n": 2}, 0), "the other process's write is seen"
    await one.aclose()
    assert await SqliteSessionStore(tmp_path / "s.sqlite3").load("a") == {"n": 1}
    with sqlite3.connect(tmp_path / "s.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_sqlite_failure_is_unavailable_and_it_reconnects(tmp_path):
    blocker = tmp_path / "dir"
    blocker.write_text("a file where the store's directory should be")
    store = SqliteSessionStore(blocker / "s.sqlite3")
    with pytest.raises(SessionStoreUnavailable, match="SQLite session store"):
        await store.load("a")
    blocker.unlink()
    await store.save("a", {"ok": True})
    assert await store.load("a") == {"ok": True}


async def test_sqlite_expires_idle_sessions(tmp_path):
    now = [1000.0]
    store = SqliteSessionStore(tmp_path / "s.sqlite3", idle_timeout_sec=10, clock=lambda: now[0])
    await store.save("a", {"x": 1})
    now[0] += 11
    assert await store.load("a") is None


@NEEDS_REDIS
async def test_redis_password_never_shows_and_a_stopped_server_is_unavailable(tmp_path, caplog):
    with redis_server(tmp_path, password="hunter2-secret") as server:
        store = open_session_store(server.url + "?prefix=p:&lease_sec=5")
        assert isinstance(store, RedisSessionStore) and store.prefix == "p:" and store.lease_sec == 5
        assert "hunter2" not in store.describe() and ":***@" in store.describe()
        await store.save("a", {"x": 1})
        server.stop()
        with caplog.at_level(logging.DEBUG), pytest.raises(SessionStoreUnavailable) as error:
            await store.load("a")
        assert "hunter2" not in str(error.value) and "hunter2" not in repr(error.value.__context__)
        server.start()  # same port, same data directory: the store reconnects by itself
        assert await store.load("a") == {"x": 1}
        await store.aclose()
    wrong = RedisSessionStore(server.url.replace("hunter2-secret", "wrong-secret-x"))
    assert "wrong-secret" not in wrong.describe()
    assert "hunter2" not in caplog.text


def test_urls_pick_the_store_and_bad_ones_say_what_to_use(tmp_path, monkeypatch):
    assert isinstance(open_session_store("memory"), MemorySessionStore)
    assert open_session_store("memory?max_sessions=3").max_sessions == 3
    sqlite_store = open_session_store(f"sqlite://{tmp_path}/s.db?lease_sec=2")
    assert isinstance(sqlite_store, SqliteSessionStore) and sqlite_store.path == tmp_path / "s.db"
    assert sqlite_store.lease_sec == 2 and sqlite_store.describe() == f"sqlite://{tmp_path}/s.db"
    for bad, message in [("mongodb://x", "unknown session store"), ("sqlite://", "names no file"),
                         ("sqlite:///x?prefix=a", "unknown option 'prefix'"), ("memory?max_sessions=a", "int")]:
        with pytest.raises(ConfigurationError, match=message):
            open_session_store(bad)
    with pytest.raises(ConfigurationError) as error:
        open_session_store("redis://:pw-secret@h:1/0?lease_sec=soon")
    assert "pw-secret" not in str(error.value)
    assert redact_url("rediss://user:pw@host:6380/2") == "rediss://user:***@host:6380/2"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_sqlite_path() == tmp_path / "chatstream" / "sessions.sqlite3"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_sqlite_path().parts[-4:] == (".local", "state", "chatstream", "sessions.sqlite3")
    manager = SessionManager(store=f"sqlite://{tmp_path}/m.db")
    assert isinstance(manager.store, SqliteSessionStore)


async def test_a_guarded_update_is_refused_when_the_history_changed_meanwhile(store):
    from chatstream.exceptions import SessionConflictError

    manager = SessionManager(store=store)
    from chatstream.serving.sessions import HttpSession

    mine, theirs = HttpSession(store, "s", {}, False), HttpSession(store, "s", {}, False)
    await mine.reload()
    await theirs.reload()
    await theirs.update(chat_prompt={"turns": ["theirs"]}, guard=("chat_prompt",))
    await mine.update(generation_params={"t": 1})  # unguarded keys are merged onto the latest data
    with pytest.raises(SessionConflictError, match="changed while this request ran"):
        await mine.update(chat_prompt={"turns": ["mine"]}, guard=("chat_prompt",))
    assert await store.load("s") == {"chat_prompt": {"turns": ["theirs"]}, "generation_params": {"t": 1}}
    assert manager.store is store
