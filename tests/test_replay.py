import threading
import time

import pytest
import torch
from _probe_support import Capture, ask, bundled
from transformers import GenerationConfig, PretrainedConfig

from chatstream.cassettes.recording import ProbeRecorder
from chatstream.cassettes.replay import MockCache, MockModel, MockTransformer
from chatstream.engine.generation import ChatGenerator, GenerationParams
from chatstream.engine.model_cache import output_cache
from chatstream.engine.token_sampler import TokenSamplerIsok
from chatstream.exceptions import CassetteMiss, CassetteNotFound, ConfigurationError

PARAMS = GenerationParams(max_new_tokens=20, temperature=2.0, seed=11)
QUESTIONS = ["Hello", "Do you like cats?", "How is the weather?", "こんにちは"]


def _answers(model, tokenizer, sampler, questions, params=PARAMS):
    generator = ChatGenerator(model, tokenizer, "cpu", params, sampler)
    return ["".join(generator.stream(ask(tokenizer, q))) for q in questions]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A compact cassette of QUESTIONS (seeded) plus two unseeded answers to the same question."""
    model, tokenizer = bundled()
    path = tmp_path_factory.mktemp("probe") / "chat"
    with ProbeRecorder(path) as recorder:
        m, t, s = recorder.wrap(model, tokenizer, TokenSamplerIsok(seed=5))
        live = _answers(m, t, s, QUESTIONS)
        recorder.flush()
        unseeded = _answers(m, t, s, ["Tell me about cats"] * 2, PARAMS.replace(seed=None, temperature=8.0))
    return path, live, unseeded


def _mock(path, wait_sec=0):
    return MockTransformer(parent_dir_path=path.parent, dirname=path.name, wait_sec=wait_sec)


def test_documented_usage_replays_with_no_weights(recorded):
    path, live, _ = recorded
    mock_transformer = MockTransformer(parent_dir_path=path.parent, dirname=path.name, wait_sec=0)
    model = mock_transformer.get_model()
    tokenizer = mock_transformer.get_tokenizer()
    token_sampler = mock_transformer.get_token_sampler()
    model.to("cpu")
    assert list(model.parameters()) == []
    assert _answers(model, tokenizer, token_sampler, QUESTIONS) == live


def test_replay_in_another_order_and_concurrently(recorded):
    path, live, _ = recorded
    mock = _mock(path)
    order = [3, 1, 0, 2]
    expected = {q: a for q, a in zip(QUESTIONS, live, strict=False)}
    results, errors = {}, []

    def talk(question):
        try:
            results[question] = _answers(mock.get_model(), mock.get_tokenizer(), mock.get_token_sampler(),
                                         [question])[0]
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=talk, args=(QUESTIONS[i],)) for i in order]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and results == expected


def test_repeated_keys_replay_in_recorded_order(recorded):
    path, _, unseeded = recorded
    assert unseeded[0] != unseeded[1]  # temperature 8 answers the same question differently
    mock = _mock(path)
    params = PARAMS.replace(seed=None, temperature=8.0)
    replayed = _answers(mock.get_model(), mock.get_tokenizer(), mock.get_token_sampler(),
                        ["Tell me about cats"] * 2, params)
    assert replayed == unseeded


def test_mock_model_looks_like_an_hf_causal_lm(recorded):
    path, _, _ = recorded
    model, real_tokenizer = bundled()
    mock = _mock(path)
    mock_model, mock_tokenizer = mock.get_model(), mock.get_tokenizer()
    assert isinstance(mock_model, MockModel) and mock_model.to(torch.device("cpu")) is mock_model
    assert mock_model.eval() is mock_model and mock_model.training is False
    assert mock_model.device == torch.device("cpu") and mock_model.dtype == torch.float32
    assert isinstance(mock_model.config, PretrainedConfig) and type(mock_model.config) is type(model.config)
    assert mock_model.config.vocab_size == model.config.vocab_size
    # the recorded fields answer without transformers; the rest comes from a GenerationConfig built on demand
    recorded_config = mock_model.generation_config
    assert recorded_config.eos_token_id == model.generation_config.eos_token_id
    assert recorded_config.do_sample == model.generation_config.do_sample
    assert isinstance(recorded_config.real(), GenerationConfig)
    assert recorded_config.real().to_dict() == model.generation_config.to_dict()
    assert recorded_config.get_generation_mode() == model.generation_config.get_generation_mode()
    assert mock_model.recorded_on["type"] == "cpu"
    for name in ("eos_token_id", "eos_token", "bos_token_id", "pad_token_id", "chat_template", "vocab_size"):
        assert getattr(mock_tokenizer, name) == getattr(real_tokenizer, name), name
    assert len(mock_tokenizer) == len(real_tokenizer)
    with pytest.raises(AttributeError, match="MockTokenizer has no 'get_vocab'"):
        mock_tokenizer.get_vocab()


def test_forward_returns_logits_and_a_cache_that_knows_its_length(recorded):
    path, _, _ = recorded
    mock = _mock(path)
    model, tokenizer = bundled()
    prompt = tokenizer(ask(tokenizer, "Hello").create_prompt(), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt])
    out = mock.get_model()(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=None,
                           use_cache=True, logits_to_keep=1)
    assert out.logits.shape == (1, 1, model.config.vocab_size) and out.logits.dtype == torch.float32
    assert isinstance(output_cache(out), MockCache) and output_cache(out).get_seq_length() == len(prompt)
    live = model(input_ids=ids).logits[0, -1]
    top = torch.topk(live, 64).indices
    assert torch.equal(out.logits[0, 0, top], live[top].half().float())  # compact: the top 64 in fp16


def test_wait_sec_sleeps_per_forward(recorded):
    path, live, _ = recorded
    mock = _mock(path, wait_sec=0.02)
    capture = Capture(mock.get_token_sampler())  # one sampler call per forward
    start = time.perf_counter()
    assert _answers(mock.get_model(), mock.get_tokenizer(), capture, QUESTIONS[:1]) == live[:1]
    assert time.perf_counter() - start >= 0.02 * len(capture.seen) > 0


def test_mock_sampler_runs_the_sampling_processors_then_returns_the_recorded_token(tmp_path):
    model, tokenizer = bundled()
    with ProbeRecorder(tmp_path / "c", fidelity="exact") as recorder:
        m, t, s = recorder.wrap(model, tokenizer, TokenSamplerIsok(seed=3))
        live_sampler = Capture(s)
        _answers(m, t, live_sampler, ["Hello"], PARAMS.replace(max_new_tokens=4))
    sampler = MockTransformer.from_path(tmp_path / "c").get_token_sampler()
    history = torch.tensor([t(ask(tokenizer, "Hello").create_prompt(), add_special_tokens=False)["input_ids"]])
    live_gen = torch.Generator().manual_seed(PARAMS.seed)
    token = TokenSamplerIsok().sample(live_sampler.seen[0], history, PARAMS.sampling, live_gen)
    replay_gen = torch.Generator().manual_seed(PARAMS.seed)
    assert sampler.sample(live_sampler.seen[0], history, PARAMS.sampling, replay_gen) == token
    # the processors ran on the logits it got: a repetition penalty gathers at the history's ids, out of range
    with pytest.raises(RuntimeError, match="index"):
        sampler.sample(live_sampler.seen[0][:, :5], history, PARAMS.sampling.__class__(repetition_penalty=1.2),
                       replay_gen)


def test_model_miss_names_cassette_asked_text_nearest_and_how_to_rerecord(recorded):
    path, _, _ = recorded
    mock = _mock(path)
    _, tokenizer = bundled()
    prompt = tokenizer(ask(tokenizer, "Hello").create_prompt(), add_special_tokens=False)["input_ids"]
    asked = [*prompt[:-2], tokenizer.convert_tokens_to_ids("Ġcats"), *prompt[-1:]]
    with pytest.raises(CassetteMiss) as caught:
        mock.get_model()(input_ids=torch.tensor([asked]), attention_mask=None, use_cache=True)
    message = str(caught.value)
    assert str(path) in message
    assert f"asked: {len(asked)} ids (0 from the cache + {len(asked)} new)" in message
    assert "<|im_start|>user\\nHello<|im_end|>" in message  # the asked ids as text
    assert f"first differs at position {len(prompt) - 2}" in message
    assert "pytest --probe" in message and "probe_mode_enabled=True" in message


def test_sampler_miss_with_other_parameters_says_what_was_recorded(recorded):
    path, _, _ = recorded
    mock = _mock(path)
    with pytest.raises(CassetteMiss, match=r"(?s)history was recorded with other params/seed.*seed 11"):
        _answers(mock.get_model(), mock.get_tokenizer(), mock.get_token_sampler(), ["Hello"], PARAMS.replace(seed=12))


def test_tokenizer_miss_shows_the_nearest_recorded_call(recorded):
    path, _, _ = recorded
    with pytest.raises(CassetteMiss, match=r"(?s)apply_chat_template.*nearest recorded apply_chat_template.*"
                                           r"first differs at character"):
        _answers(*(_mock(path).get_model(), _mock(path).get_tokenizer(), None), ["Hellp"])


def test_missing_cassette_and_escaping_names_are_refused(tmp_path):
    with pytest.raises(CassetteNotFound, match=str(tmp_path / "absent")):
        MockTransformer(parent_dir_path=tmp_path, dirname="absent")
    for bad in ("../elsewhere", "a/../../b", "/etc", ""):
        with pytest.raises(ConfigurationError, match="cassette name"):
            MockTransformer(parent_dir_path=tmp_path, dirname=bad)
    with pytest.raises(ConfigurationError, match="`dirname` \\(=None\\)"):
        MockTransformer(parent_dir_path=tmp_path)
    with pytest.raises(ConfigurationError, match="`wait_sec` \\(=-1\\)"):
        MockTransformer(parent_dir_path=tmp_path, dirname="x", wait_sec=-1)


def test_parent_defaults_to_the_probe_directory(recorded, monkeypatch):
    path, _live, _ = recorded
    monkeypatch.setenv("CHATSTREAM_PROBE_DIR", str(path.parent))
    mock = MockTransformer(dirname=path.name)
    assert mock.path == path
    assert MockTransformer.from_path(path).path == path


def test_logits_come_back_on_the_device_asked(recorded):
    path, _, _ = recorded
    model = _mock(path).get_model()
    _, tokenizer = bundled()
    prompt = tokenizer(ask(tokenizer, "Hello").create_prompt(), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt])
    assert model.to(torch.device("meta")) is model and model.device.type == "meta"  # any device, no GPU needed
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
    assert out.logits.device.type == "meta" and out.logits.shape == (1, 1, model.config.vocab_size)
    assert model.to("cpu")(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.device.type == "cpu"


def test_mock_cache_grows_in_place_and_compares_histories():
    cache = MockCache([1, 2, 3])
    for token in range(100):  # past the first buffer
        cache.append([token], cache.hasher.extend([token]))
    expected = [1, 2, 3, *range(100)]
    assert cache.ids == expected and cache.get_seq_length() == len(cache) == 103
    assert cache.hasher.hexdigest() == MockCache(expected).hasher.hexdigest()
    assert cache.holds(torch.tensor([expected])) and cache.holds(torch.tensor(expected))
    assert not cache.holds(torch.tensor([expected[:-1]])) and not cache.holds(torch.tensor([[9, *expected[1:]]]))


def test_sampler_given_another_history_than_the_last_forward_is_keyed_by_that_history(recorded):
    path, _, _ = recorded
    mock = _mock(path)
    _, tokenizer = bundled()
    prompt = tokenizer(ask(tokenizer, "Hello").create_prompt(), add_special_tokens=False)["input_ids"]
    out = mock.get_model()(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt)),
                           use_cache=True)
    generator = torch.Generator().manual_seed(PARAMS.seed)
    sampler = mock.get_token_sampler()
    assert isinstance(sampler.sample(out.logits[:, -1, :], torch.tensor([prompt]), PARAMS.sampling, generator), int)
    changed = torch.tensor([[prompt[0] + 1, *prompt[1:]]])  # same length as the forward's history, one id off
    with pytest.raises(CassetteMiss, match="token sampler call was never recorded"):
        sampler.sample(out.logits[:, -1, :], changed, PARAMS.sampling, generator)


def test_miss_on_a_recorded_history_with_another_mask_says_so(recorded):
    path, _, _ = recorded
    _, tokenizer = bundled()
    prompt = tokenizer(ask(tokenizer, "Hello").create_prompt(), add_special_tokens=False)["input_ids"]
    model = _mock(path).get_model()
    with pytest.raises(CassetteMiss, match="the same history was recorded; the call differs in how the ids"):
        model(input_ids=torch.tensor([prompt]), attention_mask=None)  # recorded with an all-ones mask
    with pytest.raises(CassetteMiss, match=r"the asked history is a prefix of it \(the recorded one goes on"):
        model(input_ids=torch.tensor([prompt[:-1]]), attention_mask=torch.ones(1, len(prompt) - 1))


def test_a_tensor_argument_is_looked_up_by_its_content_each_time(tmp_path):
    model, tokenizer = bundled()
    with ProbeRecorder(tmp_path / "c") as recorder:
        _, t, _ = recorder.wrap(model, tokenizer, None)
        first, second = t.decode([5, 6]), t.decode([7, 8])
    mock_tokenizer = MockTransformer.from_path(tmp_path / "c").get_tokenizer()
    ids = torch.tensor([5, 6])
    assert mock_tokenizer.decode(ids) == first
    ids[:] = torch.tensor([7, 8])  # the same tensor object, edited in place
    assert mock_tokenizer.decode(ids) == second != first
