"""Record real runs of the bundled model in probe mode, replay them with MockTransformer, compare."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap

import httpx
import pytest
import torch
from _probe_support import Capture, ask, bundled
from fastapi import FastAPI
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from chatstream.bundled import bundled_model_path
from chatstream.cassettes.recording import ProbeRecorder
from chatstream.cassettes.replay import MockModel, MockTransformer
from chatstream.engine.generation import ChatGenerator, GenerationParams
from chatstream.engine.token_sampler import TokenSamplerIsok
from chatstream.serving.chat_stream import ChatStream
from pytest_chatstream import lifespan

CONVERSATIONS = {
    "greet": ["Hello", "Do you like cats?", "Thanks"],
    "japanese": ["こんにちは", "How is the weather?"],
    "name": ["What is your name?", "Tell me about dogs", "Goodbye"],
    "weather": ["How is the weather?", "Do you like cats?"],
}
SERVER = {"temperature": 4.0, "top_k": 40, "seed": 1234, "max_new_tokens": 32, "num_of_concurrent_executions": 2,
          "max_queue_size": 16, "session_secret": "roundtrip-secret-0123456789", "device": "cpu"}


async def _talk(app, turns):
    """One conversation (one session cookie): each turn's streamed bytes."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        streamed = []
        for turn in turns:
            async with client.stream("POST", "/chat_stream", json={"user_input": turn}) as response:
                assert response.status_code == 200, await response.aread()
                streamed.append(b"".join([chunk async for chunk in response.aiter_bytes()]))
        return streamed


async def _serve(chat_stream, groups):
    """Hold the conversations named in ``groups``: the groups one after another, each group's concurrently."""
    app = FastAPI(lifespan=chat_stream.lifespan)
    chat_stream.append_apis(app, {"all": True})
    results = {}
    async with lifespan(app):
        for group in groups:
            answers = await asyncio.gather(*(_talk(app, CONVERSATIONS[name]) for name in group))
            results.update(zip(group, answers, strict=False))
    return results


async def test_http_round_trip_replays_the_same_bytes_in_any_order_with_no_weights(tmp_path):
    model, tokenizer = bundled()
    recording = ChatStream(model=model, tokenizer=tokenizer, probe_mode_enabled=True, probe_dir=tmp_path,
                           probe_name="http", **SERVER)
    recorded = await _serve(recording, [["greet", "japanese"], ["name"], ["weather"]])
    assert recording.probe_recorder.closed and recording.probe_recorder.stats["segments"] >= 8
    assert any(len(b) > len(b.decode()) for turns in recorded.values() for b in turns)  # multi-byte UTF-8
    for file in (tmp_path / "http").iterdir():  # the cassette opens with json and safetensors alone
        assert file.name == "manifest.json" or file.name.startswith("segment-"), file.name
        if file.suffix == ".json":
            assert isinstance(json.loads(file.read_bytes()), dict)
        else:
            assert file.suffix == ".safetensors" and isinstance(load_file(file), dict)

    mock_transformer = MockTransformer(parent_dir_path=tmp_path, dirname="http", wait_sec=0)
    mock_model = mock_transformer.get_model()
    mock_model.to(torch.device("cpu"))
    replaying = ChatStream(model=mock_model, tokenizer=mock_transformer.get_tokenizer(),
                           token_sampler=mock_transformer.get_token_sampler(), **SERVER)
    assert isinstance(replaying.model, MockModel) and list(replaying.model.parameters()) == []
    replayed = await _serve(replaying, [["weather", "name", "japanese", "greet"]])  # all at once, other order
    assert replayed == recorded


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_exact_fidelity_replays_logits_bit_for_bit(tmp_path, dtype):
    model = AutoModelForCausalLM.from_pretrained(bundled_model_path(), dtype=dtype).eval()
    _, tokenizer = bundled()
    params = GenerationParams(max_new_tokens=16, temperature=1.3, seed=9)
    questions = ["Hello", "Do you like dogs?"]
    with ProbeRecorder(tmp_path / "exact", fidelity="exact") as recorder:
        m, t, s = recorder.wrap(model, tokenizer, TokenSamplerIsok(seed=2))
        live = Capture(s)
        generator = ChatGenerator(m, t, "cpu", params, live)
        live_text = ["".join(generator.stream(ask(t, q))) for q in questions]
    mock = MockTransformer.from_path(tmp_path / "exact")
    replay = Capture(mock.get_token_sampler())
    generator = ChatGenerator(mock.get_model(), mock.get_tokenizer(), "cpu", params, replay)
    assert ["".join(generator.stream(ask(mock.get_tokenizer(), q))) for q in questions] == live_text
    assert len(replay.seen) == len(live.seen) > 0
    for live_logits, replayed_logits in zip(live.seen, replay.seen, strict=False):
        assert replayed_logits.dtype == dtype
        assert torch.equal(replayed_logits.view(torch.int16 if dtype == torch.bfloat16 else torch.int32),
                           live_logits.view(torch.int16 if dtype == torch.bfloat16 else torch.int32))


RECORD_FOREVER = textwrap.dedent("""
    import itertools, json, sys
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from chatstream.bundled import bundled_model_path
    from chatstream.engine.chat_prompt import ChatPromptFromTemplate
    from chatstream.engine.generation import ChatGenerator, GenerationParams
    from chatstream.cassettes.recording import ProbeRecorder

    path = bundled_model_path()
    recorder = ProbeRecorder(sys.argv[1], fidelity="exact")
    m, t, s = recorder.wrap(AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path))
    generator = ChatGenerator(m, t, "cpu", GenerationParams(max_new_tokens=24, temperature=1.5, seed=4), s)
    for n in itertools.count():
        prompt = ChatPromptFromTemplate(t)
        prompt.add_requester_msg(f"Hello {n}")
        prompt.add_responder_msg(None)
        answer = "".join(generator.stream(prompt))
        recorder.flush()
        print(json.dumps([n, answer]), flush=True)
""")


def test_a_recording_killed_with_sigkill_leaves_every_flushed_segment_loadable(tmp_path):
    cassette = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-c", RECORD_FOREVER, str(cassette)], stdout=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    answers = {}
    try:
        for line in process.stdout:
            n, answer = json.loads(line)
            answers[n] = answer
            if len(answers) == 3:
                break
    finally:
        process.send_signal(signal.SIGKILL)  # mid-way through the next answer (or its flush)
        process.wait(30)
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL and len(answers) == 3
    mock = MockTransformer.from_path(cassette)
    assert len(mock.cassette.segments) >= 3
    params = GenerationParams(max_new_tokens=24, temperature=1.5, seed=4)
    generator = ChatGenerator(mock.get_model(), mock.get_tokenizer(), "cpu", params, mock.get_token_sampler())
    for n, answer in answers.items():
        assert "".join(generator.stream(ask(mock.get_tokenizer(), f"Hello {n}"))) == answer
