"""Real ``chatstream serve`` processes sharing sessions: a restart keeps the conversation (the default SQLite
store), two replicas on one real redis-server serve one conversation in turn, serialise one session's
requests, survive a replica's SIGKILL (its lease runs out) and Redis restarting (503, then recovery)."""

import concurrent.futures
import json
import os
import time
from pathlib import Path

import httpx
import pytest
from _servers import NEEDS_REDIS, Replica, redis_server, replicas

from chatstream.serving.sessions import SESSION_COOKIE_NAME

SECRET = "replica-test-secret-0123456789"
GREEDY = ("--temperature", "0", "--max-new-tokens", "24", "--session-secret", SECRET)
EOS = "<::EOS::>"
QUESTIONS = ["Hello", "What is your name?", "Tell me about the weather."]
# the restart test's conversation needs a model whose third answer depends on the history
REAL_MODEL = Path(os.environ.get("CHATSTREAM_REAL_MODEL") or "~/.cache/chatstream/smollm2-135m-instruct").expanduser()
NEEDS_REAL_MODEL = pytest.mark.skipif(not (REAL_MODEL / "config.json").exists(), reason=(
    f"the real chat model is absent at {REAL_MODEL} (build it with tools/real_model.py, or set CHATSTREAM_REAL_MODEL)"))
MEMORY_QUESTIONS = ["My name is Kenta and I live in Osaka.", "I like green tea.", "What is my name?"]
PASSWORD = "replica-redis-pw-7f3a"


def turn(url: str, cookie: str | None, text: str) -> tuple[str, str]:
    """One chat turn on ``url``: (the whole 0.3 stream body, the session cookie)."""
    cookies = {SESSION_COOKIE_NAME: cookie} if cookie else {}
    answer = httpx.post(url + "chat_stream", json={"user_input": text}, cookies=cookies, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.text.endswith(EOS)
    return answer.text, answer.cookies.get(SESSION_COOKIE_NAME) or cookie


def conversation(urls: list[str]) -> list[str]:
    """The three greedy turns, turn i sent to ``urls[i % len(urls)]``."""
    cookie, bodies = None, []
    for index, question in enumerate(QUESTIONS):
        body, cookie = turn(urls[index % len(urls)], cookie, question)
        bodies.append(body)
    return bodies


def restarted_conversation(*args: str, env: dict | None = None) -> tuple[list[str], str]:
    """(three turns on one server, the third turn of the same conversation on a restarted server)."""
    args = ("--model", str(REAL_MODEL), *GREEDY, *args)
    first = Replica(*args, env=env)
    try:
        cookie, reference = None, []
        for question in MEMORY_QUESTIONS:
            body, cookie = turn(first.url, cookie, question)
            reference.append(body)
        _, cookie = turn(first.url, None, MEMORY_QUESTIONS[0])
        _, cookie = turn(first.url, cookie, MEMORY_QUESTIONS[1])
    finally:
        first.stop()
    second = Replica(*args, env=env)
    try:
        return reference, turn(second.url, cookie, MEMORY_QUESTIONS[2])[0]
    finally:
        second.stop()


@pytest.mark.real_model
@NEEDS_REAL_MODEL
def test_a_restart_keeps_the_conversation_in_the_default_store(tmp_path):
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}  # the default store: a SQLite file under the state dir
    reference, after_restart = restarted_conversation(env=env)
    assert (tmp_path / "state" / "chatstream" / "sessions.sqlite3").exists()
    assert after_restart == reference[2], "turn 3 after the restart answers the same history as without it"


@pytest.mark.real_model
@NEEDS_REAL_MODEL
def test_a_restart_with_the_memory_store_forgets():
    """The control: without a durable store the third answer differs (so the test above can fail)."""
    reference, after_restart = restarted_conversation("--session-store", "memory")
    assert after_restart != reference[2]


@pytest.fixture(scope="module")
def redis_replicas(tmp_path_factory):
    if NEEDS_REDIS.args[0]:
        pytest.skip(NEEDS_REDIS.kwargs["reason"])
    with redis_server(tmp_path_factory.mktemp("redis"), password=PASSWORD) as server, \
            replicas(2, *GREEDY, "--session-store", server.url) as started:
        yield server, started


def stored_sessions(server) -> dict:
    import redis

    with redis.Redis(port=server.port, password=PASSWORD, decode_responses=True) as client:
        return {key: json.loads(client.hget(key, "value")) for key in client.keys("chatstream:session:*")}


@NEEDS_REDIS
def test_a_conversation_alternating_between_two_replicas_streams_like_one(redis_replicas):
    _server, (r0, r1) = redis_replicas
    assert conversation([r0.url, r1.url]) == conversation([r0.url])
    assert httpx.get(r0.url + "health").json()["replica"] == "r0"
    assert httpx.get(r1.url + "health").json()["replica"] == "r1"
    assert 'chatstream_replica_info{replica="r1"} 1.0' in httpx.get(r1.url + "metrics").text


@NEEDS_REDIS
def test_two_requests_of_one_session_on_two_replicas_are_serialised(redis_replicas):
    server, (r0, r1) = redis_replicas
    _, cookie = turn(r0.url, None, "Hi")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda args: turn(*args), [(r0.url, cookie, "one"), (r1.url, cookie, "two")]))
    assert all(body.endswith(EOS) for body, _ in done), "both turns ran to the end (none was refused)"
    histories = [value["data"]["chat_prompt"] for value in stored_sessions(server).values()]
    mine = [h for h in histories if any(c.get("message") == "one" for c in h["__chatstream_prompt__"]
                                        ["chat_contents"])]
    assert len(mine) == 1
    contents = mine[0]["__chatstream_prompt__"]["chat_contents"]
    users = [c["message"] for c in contents if c["role"] == contents[0]["role"]]
    assert users[0] == "Hi" and sorted(users[1:]) == ["one", "two"], "each turn saw the other's answer"
    assert len(contents) == 6 and all(c["message"] is not None for c in contents)


@NEEDS_REDIS
def test_redis_restarting_gives_503_then_works_and_corrupts_nothing(redis_replicas):
    server, (r0, r1) = redis_replicas
    first, cookie = turn(r0.url, None, QUESTIONS[0])
    server.stop()
    try:
        refused = httpx.post(r1.url + "chat_stream", json={"user_input": QUESTIONS[1]},
                             cookies={SESSION_COOKIE_NAME: cookie}, timeout=30)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert refused.json()["error"] == "session_store_unavailable"
        health = httpx.get(r1.url + "health", timeout=30)
        assert health.status_code == 503 and health.json()["session_store"]["ok"] is False
        assert PASSWORD not in health.text and ":***@" in health.json()["session_store"]["store"]
    finally:
        server.start()
    deadline = time.monotonic() + 20
    while httpx.get(r1.url + "health", timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "the replica reconnects by itself"
        time.sleep(0.1)
    second, cookie = turn(r1.url, cookie, QUESTIONS[1])
    third, _ = turn(r0.url, cookie, QUESTIONS[2])
    assert [first, second, third] == conversation([r0.url]), "the refused request changed nothing"


@NEEDS_REDIS
def test_a_replica_killed_mid_stream_frees_its_lock_within_the_lease(tmp_path):
    mock = ("--mock", "--mock-type", "echo", "--mock-time-per-token", "0.05", "--session-secret", SECRET)
    with redis_server(tmp_path) as server, \
            replicas(2, *mock, "--session-store", server.url + "?lease_sec=2") as (r0, r1):
        _, cookie = turn(r1.url, None, "hi")
        with httpx.stream("POST", r0.url + "chat_stream", json={"user_input": "word " * 400},
                          cookies={SESSION_COOKIE_NAME: cookie}, timeout=30) as streaming:
            next(streaming.iter_bytes())  # r0 holds the session's lease and streams
            r0.kill()
        started = time.monotonic()
        _body, _ = turn(r1.url, cookie, "after")
        waited = time.monotonic() - started
        assert waited < 2 + 3, f"the dead replica's lease ran out within lease_sec (waited {waited:.1f} s)"
