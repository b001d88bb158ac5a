"""A real chat model, loaded as users load it: SmolLM2-135M-Instruct (tools/real_model.py builds it).

Greedy answers from the Python API, from ``/v1/chat/completions`` (the official openai client, on a real
server) and from both sent at once (batched) equal what transformers' own ``generate()`` answers on the same
chat template; Japanese and emoji stream without U+FFFD; a downstream app records with ``--probe`` and
replays byte-identically once the model directory is gone. Few prompts, 32 new tokens at most: they run
in CI's locked leg on two cores.
"""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
from pathlib import Path

import openai
import pytest
import torch
from _chat_project import ASYNCIO_INI, outputs

from chatstream.engine.batched_generator import BatchedChatGenerator
from chatstream.engine.chat_prompt import ChatPromptFromTemplate
from chatstream.engine.generation import ChatGenerator, GenerationParams, build_input_ids
from chatstream.engine.model_loading import load_model
from chatstream.serving.app import create_app
from chatstream.serving.chat_stream import ChatStream

pytestmark = pytest.mark.real_model

# Each ends with the model's end-of-turn token within MAX_NEW_TOKENS (a cut answer may end inside a character).
PROMPTS = ("What is the capital of France?", "Translate 'cat' into Japanese.", "What emoji means happy?")
MAX_NEW_TOKENS = 32
GREEDY = GenerationParams(temperature=0, max_new_tokens=MAX_NEW_TOKENS)
REPLACEMENT = "\N{REPLACEMENT CHARACTER}"


@functools.cache
def _loaded(path: Path):
    return load_model(path, "cpu", progress=False)


@pytest.fixture(scope="module")
def real_model(real_model_dir):
    return _loaded(real_model_dir)


@functools.cache
def _references(path: Path) -> dict[str, tuple[list[int], list[int], str]]:
    """Per prompt: transformers' chat-template ids, generate()'s greedy answer ids (EOS excluded), and its text."""
    model, tokenizer = _loaded(path)
    references = {}
    for text in PROMPTS:
        prompt_ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                   tokenize=True, return_dict=True)["input_ids"]
        ids = torch.tensor([prompt_ids])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        answer = out[0, len(prompt_ids):].tolist()
        assert answer[-1] == tokenizer.eos_token_id, f"{text!r}: pick a prompt answered within {MAX_NEW_TOKENS} tokens"
        answer = answer[:-1]
        references[text] = (list(prompt_ids), answer, tokenizer.decode(answer, skip_special_tokens=True))
    return references


@pytest.fixture(scope="module")
def references(real_model_dir, real_model):
    return _references(real_model_dir)


def ask(tokenizer, text: str) -> ChatPromptFromTemplate:
    prompt = ChatPromptFromTemplate(tokenizer)
    prompt.add_requester_msg(text)
    prompt.add_responder_msg(None)
    return prompt


def test_the_prompts_exercise_multi_byte_characters_split_across_tokens(real_model, references):
    _, tokenizer = real_model
    answers = [answer for _, answer, _ in references.values()]
    assert any(REPLACEMENT in tokenizer.decode([token]) for answer in answers for token in answer), \
        "some answer token holds part of a character, so a naive stream would show U+FFFD"
    assert any(ord(char) > 0x3000 for _, _, text in references.values() for char in text), "Japanese or emoji"


def test_python_api_greedy_answers_equal_transformers_generate(real_model, references):
    model, tokenizer = real_model
    generator = ChatGenerator(model, tokenizer, "cpu", GREEDY)
    for text, (prompt_ids, _, expected) in references.items():
        assert build_input_ids(ask(tokenizer, text), tokenizer, GREEDY)[0] == prompt_ids, "the same chat template"
        deltas = list(generator.stream(ask(tokenizer, text)))
        assert "".join(deltas) == expected, text
        assert not any(REPLACEMENT in delta for delta in deltas), text


def test_batched_prompts_sent_at_once_give_the_same_answers(real_model, references):
    model, tokenizer = real_model
    generator = BatchedChatGenerator(model, tokenizer, "cpu", GREEDY, capacity=len(PROMPTS))
    try:
        streams = [generator.stream(ask(tokenizer, text)) for text in PROMPTS]
        texts = ["" for _ in PROMPTS]
        live = set(range(len(PROMPTS)))
        for _ in range(MAX_NEW_TOKENS * 4):  # interleaved: every stream is in the batch from its first step
            for i in sorted(live):
                delta = next(streams[i], None)
                if delta is None:
                    live.discard(i)
                else:
                    assert REPLACEMENT not in delta
                    texts[i] += delta
            if not live:
                break
    finally:
        generator.close()
    assert texts == [references[text][2] for text in PROMPTS]


@pytest.mark.parametrize("batching", [False, True], ids=["serial", "batched"])
async def test_openai_client_streams_the_same_answers_sent_at_once(real_model, references, serve, batching):
    model, tokenizer = real_model
    chat_stream = ChatStream(model=model, tokenizer=tokenizer, device="cpu", temperature=0,
                             max_new_tokens=MAX_NEW_TOKENS, batching=batching,
                             num_of_concurrent_executions=len(PROMPTS), model_name="smollm2")
    base_url = serve(create_app(chat_stream))

    async def answer(client: openai.AsyncOpenAI, text: str) -> list[str]:
        stream = await client.chat.completions.create(model="smollm2", stream=True,
                                                      messages=[{"role": "user", "content": text}])
        return [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]

    async with openai.AsyncOpenAI(api_key="none", base_url=base_url + "/v1", max_retries=0, timeout=300) as client:
        streamed = await asyncio.gather(*(answer(client, text) for text in PROMPTS))
        whole = await client.chat.completions.create(model="smollm2",
                                                     messages=[{"role": "user", "content": PROMPTS[0]}])
    for text, deltas in zip(PROMPTS, streamed, strict=True):
        assert "".join(deltas) == references[text][2], text
        assert not any(REPLACEMENT in delta for delta in deltas), text
    assert whole.choices[0].message.content == references[PROMPTS[0]][2]
    assert whole.usage.prompt_tokens == len(references[PROMPTS[0]][0])


APP_CONFTEST = f"""\
import pytest


@pytest.fixture
def chatstream_config():
    return {{"temperature": 0, "max_new_tokens": {MAX_NEW_TOKENS}}}


@pytest.fixture
def saved(request):
    def save(body: bytes) -> None:
        out = request.config.rootpath / "out"
        out.mkdir(exist_ok=True)
        (out / request.node.name).write_bytes(body)
    return save
"""

APP_TESTS = f"""\
import json

PROMPTS = {list(PROMPTS)!r}


async def test_chat_stream_endpoint(chatstream_client, saved):
    response = await chatstream_client.post("/chat_stream", json={{"user_input": PROMPTS[1], "regenerate": False}})
    assert response.status_code == 200
    saved(response.content)


async def test_openai_endpoint_streams(chatstream_openai, saved):
    [model] = (await chatstream_openai.models.list()).data
    stream = await chatstream_openai.chat.completions.create(
        model=model.id, stream=True, messages=[{{"role": "user", "content": PROMPTS[2]}}])
    saved(json.dumps([chunk.choices[0].delta.content async for chunk in stream if chunk.choices]).encode())
"""


def test_a_downstream_app_records_with_probe_and_replays_byte_identically_without_the_model(
    pytester: pytest.Pytester, real_model_dir, references
) -> None:
    model = pytester.path / "model"
    try:  # a copy the test may delete: hard links where the file system allows, else copies
        shutil.copytree(real_model_dir, model, copy_function=lambda src, dst: _link_or_copy(src, dst))
    except OSError:
        shutil.rmtree(model, ignore_errors=True)
        shutil.copytree(real_model_dir, model)
    pytester.makeini("[pytest]\n" + ASYNCIO_INI + "filterwarnings =\n    error\n"
                     "    ignore::DeprecationWarning:transformers.*\n    ignore::FutureWarning:transformers.*\n")
    pytester.makeconftest(APP_CONFTEST)
    pytester.makepyfile(test_app=APP_TESTS)

    recorded = pytester.runpytest("--probe", f"--probe-model={model}")
    recorded.assert_outcomes(passed=2)
    recorded.stdout.fnmatch_lines(["recorded: 2 cassette(s), *"])
    live = outputs(pytester.path)
    assert references[PROMPTS[1]][2] in live["test_chat_stream_endpoint"].decode()
    assert "".join(c or "" for c in json.loads(live["test_openai_endpoint_streams"])) == references[PROMPTS[2]][2]

    shutil.rmtree(model)
    replayed = pytester.runpytest()
    replayed.assert_outcomes(passed=2)
    replayed.stdout.fnmatch_lines(["mode: replay; 2 test(s) used cassettes in *", "replayed: 2 cassette(s)"])
    assert outputs(pytester.path) == live


def _link_or_copy(src: str, dst: str) -> None:
    import os

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
