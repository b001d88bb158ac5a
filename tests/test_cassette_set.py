"""Probe mode across replicas: each replica records into a cassette directory named by its replica, and
replay (MockTransformer, hence the pytest plugin) takes their parent as one cassette."""

import pytest
from _probe_support import ask, bundled, random_model

from chatstream.cassettes.recording import ProbeRecorder
from chatstream.cassettes.replay import MockTransformer
from chatstream.engine.generation import ChatGenerator, GenerationParams
from chatstream.engine.token_sampler import TokenSamplerIsok
from chatstream.exceptions import CassetteFormatError, CassetteMiss
from chatstream.serving.chat_stream import ChatStream

PARAMS = GenerationParams(max_new_tokens=12, temperature=0)


def record(directory, model, tokenizer, question):
    with ProbeRecorder(directory) as recorder:
        m, t, s = recorder.wrap(model, tokenizer, TokenSamplerIsok(seed=1))
        return "".join(ChatGenerator(m, t, "cpu", PARAMS, s).stream(ask(t, question)))


def replay(mock, question):
    generator = ChatGenerator(mock.get_model(), mock.get_tokenizer(), "cpu", PARAMS, mock.get_token_sampler())
    return "".join(generator.stream(ask(mock.get_tokenizer(), question)))


def test_the_replicas_cassettes_replay_as_one(tmp_path):
    model, tokenizer = bundled()
    answers = {q: record(tmp_path / "set" / name, model, tokenizer, q)
               for name, q in [("host-1", "Hello"), ("host-2", "Do you like dogs?")]}
    mock = MockTransformer(parent_dir_path=tmp_path, dirname="set")
    assert {q: replay(mock, q) for q in answers} == answers, "each replica's answer replays from the set"
    single = MockTransformer.from_path(tmp_path / "set" / "host-1")
    with pytest.raises(CassetteMiss):
        replay(single, "Do you like dogs?")


def test_cassettes_of_different_models_are_not_one_set(tmp_path):
    model, tokenizer = bundled()
    record(tmp_path / "set" / "a", model, tokenizer, "Hello")
    other_model, other_tokenizer = random_model(128)
    record(tmp_path / "set" / "b", other_model, other_tokenizer, "Hello")
    with pytest.raises(CassetteFormatError, match="differ in their model"):
        MockTransformer(parent_dir_path=tmp_path, dirname="set")


def test_a_replica_in_probe_mode_records_under_its_replica_name(tmp_path):
    model, tokenizer = bundled()
    chat_stream = ChatStream(model=model, tokenizer=tokenizer, probe_mode_enabled=True, probe_dir=tmp_path,
                             replica_name="host:42")
    try:
        assert chat_stream.probe_recorder.path == tmp_path / "host-42"
    finally:
        chat_stream.close()
