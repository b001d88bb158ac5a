import hashlib
import json
import shutil

import pytest
import torch
from _probe_support import ask, bundled
from safetensors.torch import load_file, save_file

from chatstream.cassettes import cassette as fmt
from chatstream.cassettes.recording import ProbeRecorder
from chatstream.cassettes.verify import TOLERANCES, VerifyResult, compare_cassettes
from chatstream.engine.generation import ChatGenerator, GenerationParams
from chatstream.engine.token_sampler import TokenSampler, TokenSamplerIsok
from chatstream.exceptions import CassetteNotFound

PARAMS = GenerationParams(max_new_tokens=12, temperature=1.2, seed=21)


def _record(path, fidelity="exact", params=PARAMS, questions=("Hello", "Do you like cats?"), sampler=None):
    model, tokenizer = bundled()
    with ProbeRecorder(path, fidelity=fidelity) as recorder:
        m, t, s = recorder.wrap(model, tokenizer, sampler or TokenSamplerIsok(seed=1))
        generator = ChatGenerator(m, t, "cpu", params, s)
        for question in questions:
            "".join(generator.stream(ask(t, question)))
    return path


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    return _record(tmp_path_factory.mktemp("verify") / "recorded")


def _copy(recorded, tmp_path):
    return shutil.copytree(recorded, tmp_path / "live")


def _edit_tensors(cassette, change):
    for meta in sorted(cassette.glob("segment-*.json")):
        document = json.loads(meta.read_text())
        path = cassette / document["tensors"]["file"]
        tensors = {k: change(k, v) for k, v in load_file(path).items()}
        save_file(tensors, path)
        data = path.read_bytes()
        document["tensors"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        meta.write_text(json.dumps(document))


def _edit_sample(cassette, step, change):
    """Apply ``change(sample, forward_logits)`` to the ``step``-th sample in recorded order."""
    loaded = fmt.load_cassette(cassette)
    forwards = {f["s"]: f["logits"] for f in loaded.forwards()}
    target = list(loaded.samples())[step]
    for meta in sorted(cassette.glob("segment-*.json")):
        document = json.loads(meta.read_text())
        for sample in document["samples"]:
            if sample["s"] == target["s"]:
                change(sample, forwards[sample["lf"]].full()[0])
                meta.write_text(json.dumps(document))
                return


def test_a_fresh_recording_of_the_same_run_is_identical(recorded, tmp_path):
    result = compare_cassettes(recorded, _record(tmp_path / "live"))
    assert result.status == "identical" and result.first_divergent_step is None
    assert result.steps_compared == len(list(fmt.load_cassette(recorded).samples())) > 10
    assert result.max_logit_diff == 0.0
    assert (result.rtol, result.atol) == TOLERANCES["float32"]
    assert str(result).startswith(f"identical: {result.steps_compared} steps compared")


def test_small_logit_differences_are_within_tolerance(recorded, tmp_path):
    live = _copy(recorded, tmp_path)
    _edit_tensors(live, lambda name, t: t + 1e-5 if name.endswith(".values") else t)
    result = compare_cassettes(recorded, live)
    assert result.status == "within_tolerance" and result.first_divergent_step is None
    assert 0 < result.max_logit_diff < 1e-4


def test_large_logit_differences_diverge_at_the_first_step(recorded, tmp_path):
    live = _copy(recorded, tmp_path)
    _edit_tensors(live, lambda name, t: t * 1.5 if name.endswith(".values") else t)
    result = compare_cassettes(recorded, live)
    assert result.status == "diverged" and result.first_divergent_step == 0
    assert "beyond rtol" in result.reason and result.max_logit_diff > 0.1
    # the token is the same on both sides: the summary says what differs instead of "token 44, live token 44"
    assert result.differs == "logits" and result.recorded_token == result.live_token
    assert f"both sides chose token {result.recorded_token}" in str(result)
    assert abs(result.live_logit - result.recorded_logit) == pytest.approx(result.max_logit_diff, rel=1e-5)
    assert f"at token {result.worst_token}" in str(result)


def test_a_different_token_in_each_others_top_k_is_within_tolerance(recorded, tmp_path):
    live = _copy(recorded, tmp_path)
    _edit_sample(live, 3, lambda s, logits: s.update(tok=int(torch.topk(logits, 2).indices[1])))
    result = compare_cassettes(recorded, live)
    assert result.status == "within_tolerance" and result.first_divergent_step == 3
    assert result.recorded_token != result.live_token and "top 5" in result.reason and result.differs == "token"
    assert result.recorded_text is not None


def test_a_token_outside_the_top_k_diverges_and_reports_both_tokens(recorded, tmp_path):
    live = _copy(recorded, tmp_path)
    _edit_sample(live, 4, lambda s, logits: s.update(tok=int(torch.argmin(logits))))
    result = compare_cassettes(recorded, live, top_k=5)
    assert result.status == "diverged" and result.first_divergent_step == 4
    data = result.to_dict()
    assert data["live_token"] == result.live_token and data["status"] == "diverged"
    assert f"step 4: recorded token {result.recorded_token}" in str(result) and "\n" not in str(result)


class _SwervesAt(TokenSampler):
    """TokenSamplerIsok, except that its ``step``-th call picks the least likely token: a live run that took
    another path there, with the same prompt, parameters and seed."""

    def __init__(self, step):
        self.inner, self.step, self.calls = TokenSamplerIsok(seed=1), step, 0

    def sample(self, logits, input_ids, params, generator=None):
        token = self.inner.sample(logits, input_ids, params, generator)
        self.calls += 1
        return int(torch.argmin(logits)) if self.calls - 1 == self.step else token


def test_a_live_run_that_took_another_path_diverges(recorded, tmp_path):
    live = _record(tmp_path / "live", sampler=_SwervesAt(2))  # the same seed: only the tokens differ
    result = compare_cassettes(recorded, live)
    assert result.status == "diverged" and result.first_divergent_step == 2
    assert result.differs == "token" and result.recorded_token != result.live_token
    assert f"step 2: recorded token {result.recorded_token}" in str(result)


def test_a_live_run_with_another_seed_is_never_found(recorded, tmp_path):
    live = _record(tmp_path / "live", params=PARAMS.replace(seed=22))
    result = compare_cassettes(recorded, live)
    assert result.status == "diverged" and result.first_divergent_step == 0
    assert "never sampled after this history" in result.reason


def test_compact_cassettes_compare_at_fp16_tolerance(tmp_path):
    a = _record(tmp_path / "a", fidelity="compact", questions=("Hello",))
    b = _record(tmp_path / "b", fidelity="compact", questions=("Hello",))
    result = compare_cassettes(a, b)
    assert result.status == "identical" and (result.rtol, result.atol) == TOLERANCES["float16"]
    assert isinstance(result, VerifyResult)


def test_missing_cassettes_raise(tmp_path, recorded):
    with pytest.raises(CassetteNotFound):
        compare_cassettes(recorded, tmp_path / "absent")
