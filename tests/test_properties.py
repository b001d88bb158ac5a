"""Property-based checks (hypothesis) of issue 10: whatever a client sends, no 5xx, never a 200 followed by a
broken stream, and the history unchanged after any 4xx; whatever a cassette is mutated into, only a
CassetteError escapes the loader and the replay, within a time bound."""

import asyncio
import json
import random
import shutil
import string
import threading
from pathlib import Path

import httpx
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatstream.exceptions import CassetteError
from chatstream.serving.chat_stream import ChatStream
from chatstream.serving.client_roles import client_role_free_access

SECRET = "0123456789abcdef-test"
EOS = "<::EOS::>"
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | \
    st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
PARAM_NAMES = ["temperature", "top_k", "top_p", "repetition_penalty", "repetition_penalty_method",
               "max_new_tokens", "seed", "top_k_value", "top_p_value", "context_len", "stop_strings", "bogus"]
numbers = (st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False, allow_infinity=False)
           | st.sampled_from([0, 1, 1e-300, 1e-5, 1e-4, 1e4, 1e300, 2**63, 2**64 - 1, 2**64, -(2**63) - 1]))
param_changes = st.dictionaries(st.sampled_from(PARAM_NAMES), numbers | json_scalars |
                                st.sampled_from(["multiplicative", "subtractive"]), max_size=4)
chat_bodies = st.one_of(
    st.fixed_dictionaries({"user_input": st.text(max_size=40)}, optional={"regenerate": json_scalars}),
    st.dictionaries(st.sampled_from(["user_input", "regenerate", "x"]), json_values, max_size=3),
    json_values,
)


def tiny_model():
    from chatstream.bundled import bundled_model_path

    if not hasattr(tiny_model, "loaded"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = bundled_model_path()
        tiny_model.loaded = (AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path))
    return tiny_model.loaded


async def history(client):
    response = await client.get("/get_prompt")
    assert response.status_code == 200
    return response.json()


async def check_one_exchange(chat_stream, requests):
    """Send ``requests`` ((path, raw body) pairs) in one session and check every answer."""
    chat_stream.set_client_roles(client_role_free_access)  # the exchanges read /get_prompt
    app = FastAPI(lifespan=chat_stream.lifespan)
    chat_stream.append_apis(app, {"all": True})
    await chat_stream.start_queue_worker()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.post("/chat_stream", json={"user_input": "hello"})).status_code == 200
        for path, body in requests:
            before = await history(client)
            params_before = (await client.get("/get_generation_params")).json()
            response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
            # a broken stream raises here (httpx reads the whole body), so it cannot pass as a 200
            assert response.status_code < 500, response.text
            if 400 <= response.status_code < 500:
                assert await history(client) == before, (path, body)
                assert (await client.get("/get_generation_params")).json() == params_before
            elif path == "/chat_stream" and response.headers["content-type"].startswith("text/plain"):
                assert response.text.endswith(EOS), response.text  # an empty answer too sends the marker
            follow = await client.post("/chat_stream", json={"user_input": "and now?"})
            assert follow.status_code == 200 and follow.text.endswith(EOS), follow.text


def encoded(value):
    return json.dumps(value, allow_nan=True).encode()


@SETTINGS
@given(body=chat_bodies | st.binary(max_size=40).map(lambda b: b"\x00" + b))
def test_any_chat_body_gets_a_complete_stream_or_a_4xx_that_changes_nothing(body):
    raw = body if isinstance(body, bytes) else encoded(body)
    chat_stream = ChatStream(use_mock_response=True, mock_params={"type": "echo"}, session_secret=SECRET)
    asyncio.run(check_one_exchange(chat_stream, [("/chat_stream", raw)]))


@settings(max_examples=30, deadline=None)
@given(changes=param_changes)
def test_any_generation_parameters_are_refused_or_generate(changes):
    model, tokenizer = tiny_model()
    chat_stream = ChatStream(model=model, tokenizer=tokenizer, device="cpu", session_secret=SECRET, max_new_tokens=3)
    asyncio.run(check_one_exchange(chat_stream, [("/set_generation_params", encoded(changes))]))


# -- cassettes --------------------------------------------------------------------------------------------

SOURCE = Path(__file__).parent.parent / "fixtures/cassettes/tests/test_endpoints_cassette/" \
    "test_plain_def_tests_use_the_sync_client"
FILES = ["manifest.json", "segment-000001.json", "segment-000001.safetensors"]


def json_paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from json_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from json_paths(child, (*prefix, index))


def mutate(directory: Path, seed: int, replacement, kind: str) -> None:
    rng = random.Random(seed)
    name = rng.choice(FILES)
    path = directory / name
    data = path.read_bytes()
    if kind == "bytes" or name.endswith(".safetensors"):
        data = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data[: rng.choice([len(data), rng.randrange(len(data))])]))
        return
    document = json.loads(data)
    target = rng.choice(list(json_paths(document))[1:])
    parent = document
    for key in target[:-1]:
        parent = parent[key]
    if kind == "delete":
        del parent[target[-1]]
    elif kind == "key" and isinstance(parent, dict):
        parent[rng.choice(["__class__", "_transformer", "__dict__", "".join(rng.choices(string.ascii_letters, k=5))])] \
            = replacement
    else:
        parent[target[-1]] = replacement
    path.write_text(json.dumps(document, allow_nan=True))


def replay_once(path: Path) -> None:
    from chatstream.cassettes.replay import MockTransformer
    from chatstream.engine.chat_prompt import ChatPromptFromTemplate
    from chatstream.engine.generation import ChatGenerator, GenerationParams

    transformer = MockTransformer.from_path(path)
    tokenizer = transformer.get_tokenizer()
    prompt = ChatPromptFromTemplate(tokenizer)
    prompt.add_requester_msg("Goodbye")  # what the cassette recorded, with its sampling parameters
    prompt.add_responder_msg(None)
    params = GenerationParams(max_new_tokens=32, seed=0, top_k=1)  # the recording's (its manifest's "sampling")
    generator = ChatGenerator(transformer.get_model(), tokenizer, "cpu", params, transformer.get_token_sampler())
    return "".join(generator.stream(prompt))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), replacement=json_values, kind=st.sampled_from(["bytes", "value", "delete", "key"]))
def test_a_mutated_cassette_raises_only_cassette_errors_quickly(tmp_path_factory, seed, replacement, kind):
    path = tmp_path_factory.mktemp("mutated") / "c"
    shutil.copytree(SOURCE, path)
    mutate(path, seed, replacement, kind)
    outcome = {}

    def run():
        try:
            replay_once(path)
        except CassetteError:
            pass
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "loading or replaying a mutated cassette took over 10 s"
    if "error" in outcome:
        raise AssertionError(f"{type(outcome['error']).__name__}: {outcome['error']}") from outcome["error"]


def test_the_unmutated_cassette_replays():
    assert replay_once(SOURCE)


