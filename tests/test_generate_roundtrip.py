"""``model.generate()`` called by an app on a recording proxy is recorded, and MockModel.generate replays it."""

import pytest
import torch
from _probe_support import ask, bundled

from chatstream.cassettes import cassette as fmt
from chatstream.cassettes.recording import ProbeRecorder
from chatstream.cassettes.replay import MockTransformer
from chatstream.engine.generation import ChatGenerator, GenerationParams
from chatstream.engine.token_sampler import TokenSamplerIsok
from chatstream.exceptions import CassetteMiss


class ListStreamer:
    """What transformers' streamers receive: put(tensor) calls, then end()."""

    def __init__(self):
        self.put_ids, self.ended = [], False

    def put(self, value):
        self.put_ids.append(value.reshape(-1).tolist())

    def end(self):
        self.ended = True


def _prompt_ids(tokenizer):
    return tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}], add_generation_prompt=True,
                                         return_tensors="pt", return_dict=True)["input_ids"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    model, tokenizer = bundled()
    ids = _prompt_ids(tokenizer)
    path = tmp_path_factory.mktemp("generate") / "cassette"
    with ProbeRecorder(path, fidelity="compact") as recorder:
        m, t, s = recorder.wrap(model, tokenizer, TokenSamplerIsok(seed=1))
        greedy = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
        sampled = []
        for seed in (3, 4):
            torch.manual_seed(seed)
            sampled.append(m.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                                      do_sample=True, temperature=4.0, top_k=50, streamer=ListStreamer()))
        recorder.flush()
        # the decode loop on the same proxy afterwards is recorded once per forward, not twice
        ChatGenerator(m, t, "cpu", GenerationParams(max_new_tokens=5, temperature=0), s).generate_text(ask(t, "Hi"))
    return path, ids, greedy, sampled


def test_generate_on_a_recording_proxy_is_recorded_with_its_forwards(recorded):
    path, ids, _, sampled = recorded
    cassette = fmt.load_cassette(path)
    generates = [c for c in cassette.calls() if c["fn"] == "model.generate"]
    assert len(generates) == 3
    assert sampled[0].tolist() != sampled[1].tolist()  # two draws, so the test can tell them apart
    first_segment = cassette.segments[0]
    prefills = [f for f in first_segment.forwards if f["n"] == 0]
    assert len(prefills) == 3 and all(f["ids"] == ids[0].tolist() for f in prefills)
    assert len(first_segment.forwards) >= 3 + 7  # each generate: a prefill, then one forward per new token
    loop_forwards = cassette.segments[1].forwards
    assert len(loop_forwards) == 5  # the decode loop's forwards, each recorded once
    live_model, _ = bundled()
    assert "_chatstream_recorder" in vars(live_model)["forward"].__dict__


def test_mock_model_generate_replays_greedy_and_sampled_calls_in_order(recorded):
    path, ids, greedy, sampled = recorded
    model = MockTransformer.from_path(path).get_model()
    assert torch.equal(model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False),
                       greedy)
    streamer = ListStreamer()
    replayed = [model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=True,
                               temperature=4.0, top_k=50, streamer=s) for s in (streamer, ListStreamer())]
    assert [r.tolist() for r in replayed] == [s.tolist() for s in sampled]
    assert streamer.ended and streamer.put_ids[0] == ids[0].tolist()
    assert [p[0] for p in streamer.put_ids[1:]] == sampled[0][0, ids.shape[1]:].tolist()
    with pytest.raises(CassetteMiss, match=r"model\.generate"):
        model.generate(ids, max_new_tokens=9, do_sample=False)
