import threading

import pytest
import torch
from _probe_support import ask, bundled, random_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from chatstream.cassettes import cassette as fmt
from chatstream.cassettes.fingerprint import fingerprint_model_dir
from chatstream.cassettes.recording import ProbeRecorder, RecordingModel
from chatstream.engine.generation import ChatGenerator, GenerationParams
from chatstream.engine.model_cache import cache_argument, output_cache
from chatstream.engine.token_sampler import TokenSampler, TokenSamplerIsok
from chatstream.exceptions import CassetteError, ConfigurationError

PARAMS = GenerationParams(max_new_tokens=24, temperature=1.5, seed=7)


def _generate(model, tokenizer, sampler, *questions, params=PARAMS):
    generator = ChatGenerator(model, tokenizer, "cpu", params, sampler)
    return ["".join(generator.stream(ask(tokenizer, q))) for q in questions]


def test_proxies_behave_like_the_wrapped_objects(tmp_path):
    model, tokenizer = bundled()
    recorder = ProbeRecorder(tmp_path / "c")
    m, t, s = recorder.wrap(model, tokenizer, TokenSamplerIsok(seed=1))
    assert isinstance(m, PreTrainedModel) and isinstance(m, RecordingModel)
    assert isinstance(t, PreTrainedTokenizerBase) and isinstance(s, TokenSampler)
    assert m.config is model.config and t.eos_token_id == tokenizer.eos_token_id and len(t) == len(tokenizer)
    assert m.to("cpu") is m and m.eval() is m  # methods returning the model keep the proxy
    m.some_flag = 3
    assert model.some_flag == 3
    del m.some_flag
    assert t("Hi", add_special_tokens=False) == tokenizer("Hi", add_special_tokens=False)
    live = _generate(model, tokenizer, TokenSamplerIsok(seed=1), "Hello", "Do you like cats?")
    assert _generate(m, t, s, "Hello", "Do you like cats?") == live
    recorder.close()


def test_manifest_records_versions_device_model_tokenizer_and_fingerprints(tmp_path):
    model, tokenizer = bundled()
    recorder = ProbeRecorder(tmp_path / "c", fidelity="fp16", sampling={"temperature": 0.7, "seed": 3},
                             extra_metadata={"test": "manifest"})
    recorder.wrap(model, tokenizer, None)
    recorder.close()
    manifest = fmt.load_cassette(tmp_path / "c").manifest
    assert manifest["format_version"] == fmt.PLAIN_FORMAT_VERSION and manifest["fidelity"] == "fp16"
    assert set(manifest["versions"]) >= {"chatstream", "torch", "transformers"}
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["model"]["device"]["type"] == "cpu" and manifest["model"]["device"]["name"]
    assert manifest["model"]["dtype"] == "float32"
    assert manifest["model"]["config"]["vocab_size"] == model.config.vocab_size
    assert manifest["model"]["forward_accepts_logits_to_keep"] is True
    assert manifest["tokenizer"]["chat_template"] == tokenizer.chat_template
    assert manifest["tokenizer"]["special_token_ids"]["eos_token_id"] == tokenizer.eos_token_id
    assert manifest["tokenizer"]["len"] == len(tokenizer)
    assert manifest["fingerprints"] == fingerprint_model_dir(model.name_or_path)
    assert manifest["sampling"] == {"temperature": 0.7, "seed": 3}
    assert manifest["extra"] == {"test": "manifest"}
    assert manifest["token_sampler"]["class"] == "TokenSamplerIsok"
    assert manifest["recorded_at"].endswith("+00:00")


def test_forwards_are_keyed_by_the_whole_history_they_continue(tmp_path):
    model, tokenizer = bundled()
    with ProbeRecorder(tmp_path / "c", fidelity="exact") as recorder:
        m, t, s = recorder.wrap(model, tokenizer, TokenSamplerIsok(seed=1))
        _generate(m, t, s, "Hello")
    cassette = fmt.load_cassette(tmp_path / "c")
    forwards, samples = list(cassette.forwards()), list(cassette.samples())
    prompt = t(ask(tokenizer, "Hello").create_prompt(), add_special_tokens=False)["input_ids"]
    assert forwards[0]["n"] == 0 and forwards[0]["ids"] == prompt and forwards[0]["h"] == fmt.history_hash(prompt)
    history = list(prompt)
    for forward, sample in zip(forwards[1:], samples, strict=False):
        history.append(sample["tok"])
        assert forward["n"] == len(history) - 1 and forward["ids"] == [sample["tok"]]
        assert forward["h"] == fmt.history_hash(history) and forward["m"] == "ones"
    # each sample points at the forward whose logits it got, and has the same history
    by_seq = {f["s"]: f for f in forwards}
    assert all(by_seq[s["lf"]]["h"] == s["h"] for s in samples)
    assert samples[0]["seed"] == PARAMS.seed and samples[0]["params"] == PARAMS.sampling.to_dict()


def test_tokenizer_calls_are_recorded_once_each_with_results(tmp_path):
    model, tokenizer = bundled()
    with ProbeRecorder(tmp_path / "c") as recorder:
        m, t, s = recorder.wrap(model, tokenizer, TokenSamplerIsok(seed=1))
        _generate(m, t, s, "Hello", "Hello")
        t.encode("Hi")
        t.batch_decode([[5, 6]])
    calls = list(fmt.load_cassette(tmp_path / "c").calls())
    methods = [c["fn"] for c in calls]
    assert methods.count("apply_chat_template") == 1 and methods.count("__call__") == 1
    assert {"decode", "encode", "batch_decode"} <= set(methods)
    keys = [fmt.canonical_json([c["fn"], c["a"], c["kw"]]) for c in calls]
    assert len(keys) == len(set(keys))
    encode = next(c for c in calls if c["fn"] == "encode")
    assert encode["out"] == tokenizer.encode("Hi")


def test_compact_costs_under_1_kib_per_generated_token_at_32k_and_128k(tmp_path):
    params = GenerationParams(max_new_tokens=64, temperature=1.0, top_k=None, seed=0)
    for vocab in (32_000, 128_000):
        model, tokenizer = random_model(vocab)
        eos_free = model.generation_config
        eos_free.eos_token_id = None
        with ProbeRecorder(tmp_path / str(vocab)) as recorder:
            m, t, s = recorder.wrap(model, tokenizer, None)
            before = recorder.bytes_written  # the manifest
            generator = ChatGenerator(m, t, "cpu", params, s)
            generator.eos_ids = set()
            tokens = sum(1 for _ in generator.stream(ask(t, "Hello there, how are you?")))
        per_token = (recorder.bytes_written - before) / params.max_new_tokens
        assert tokens > 0 and per_token < 1024, (vocab, per_token)


def test_flush_is_thread_safe_with_concurrent_generations(tmp_path):
    model, tokenizer = bundled()
    recorder = ProbeRecorder(tmp_path / "c")
    m, t, s = recorder.wrap(model, tokenizer, TokenSamplerIsok(seed=1))
    questions = ["Hello", "Do you like cats?", "How is the weather?", "What is your name?"]
    errors = []

    def talk(question):
        try:
            for _ in range(2):
                _generate(m, t, s, question)
                recorder.flush()
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=talk, args=(q,)) for q in questions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorder.close()
    assert not errors
    cassette = fmt.load_cassette(tmp_path / "c")
    seqs = [e["s"] for e in [*cassette.forwards(), *cassette.samples(), *cassette.calls()]]
    assert len(seqs) == len(set(seqs))
    assert [s.number for s in cassette.segments] == list(range(1, len(cassette.segments) + 1))
    assert recorder.stats["segments"] == len(cassette.segments) >= 2
    assert sum(f["n"] == 0 for f in cassette.forwards()) == 8  # one prefill per generation


def test_nothing_is_recorded_after_close_but_the_proxies_still_work(tmp_path):
    model, tokenizer = bundled()
    recorder = ProbeRecorder(tmp_path / "c")
    m, t, s = recorder.wrap(model, tokenizer, TokenSamplerIsok(seed=1))
    recorder.close()
    assert _generate(m, t, s, "Hello") == ["Hello! How can I help you today?"]
    assert recorder.flush() == 0 and recorder.stats["pending"] == 0


def test_recorder_refuses_an_existing_cassette_and_bad_fidelity(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "manifest.json").write_text("{}")
    with pytest.raises(CassetteError, match="already exists and is not an empty directory"):
        ProbeRecorder(tmp_path / "c")
    with pytest.raises(ConfigurationError, match="`fidelity` \\(='best'\\) must be one of"):
        ProbeRecorder(tmp_path / "d", fidelity="best")
    recorder = ProbeRecorder(tmp_path / "e")
    model, tokenizer = bundled()
    recorder.wrap(model, tokenizer, None)
    with pytest.raises(CassetteError, match="already wraps a model"):
        recorder.wrap(model, tokenizer, None)


def test_a_batched_forward_not_stacked_by_the_batching_engine_is_refused_with_a_clear_error(tmp_path):
    model, tokenizer = bundled()
    m, _, _ = ProbeRecorder(tmp_path / "c").wrap(model, tokenizer, None)
    with pytest.raises(CassetteError, match=r"batched forward \(input_ids \(2, 3\)\).*chatstream_rows"):
        m(input_ids=torch.ones(2, 3, dtype=torch.long))


def test_forward_called_directly_is_recorded_with_its_signature(tmp_path):
    model, tokenizer = bundled()
    recorder = ProbeRecorder(tmp_path / "c", fidelity="exact")
    m, _, _ = recorder.wrap(model, tokenizer, None)
    import inspect

    assert "logits_to_keep" in inspect.signature(m.forward).parameters
    out = m.forward(input_ids=torch.tensor([[5, 6, 7]]), use_cache=True)
    m(input_ids=torch.tensor([[8]]), **{cache_argument(model): output_cache(out)}, use_cache=True)
    recorder.close()
    forwards = list(fmt.load_cassette(tmp_path / "c").forwards())
    assert [(f["n"], f["ids"], f["m"]) for f in forwards] == [(0, [5, 6, 7], None), (3, [8], None)]
    assert torch.equal(forwards[0]["logits"].full(), out.logits[:, -1, :])


def test_a_cache_probe_mode_never_saw_is_not_recorded_and_warns(tmp_path):
    model, tokenizer = bundled()
    recorder = ProbeRecorder(tmp_path / "c")
    m, _, _ = recorder.wrap(model, tokenizer, None)
    foreign = output_cache(model(input_ids=torch.tensor([[5, 6]]), use_cache=True))
    with pytest.warns(RuntimeWarning, match="did not see filled"):
        m(input_ids=torch.tensor([[8]]), **{cache_argument(model): foreign}, use_cache=True)
    assert recorder.stats["pending"] == 0


def test_a_cropped_cache_continues_from_what_it_still_holds(tmp_path):
    model, tokenizer = bundled()
    recorder = ProbeRecorder(tmp_path / "c", fidelity="exact")
    m, _, _ = recorder.wrap(model, tokenizer, None)
    out = m(input_ids=torch.tensor([[5, 6, 7, 8]]), use_cache=True)
    output_cache(out).crop(-2)  # drop the last two ids, as speculative decoding does
    m(input_ids=torch.tensor([[9]]), **{cache_argument(model): output_cache(out)}, use_cache=True)
    recorder.close()
    forwards = list(fmt.load_cassette(tmp_path / "c").forwards())
    assert [(f["n"], f["ids"], f["h"]) for f in forwards] == [
        (0, [5, 6, 7, 8], fmt.history_hash([5, 6, 7, 8])), (2, [9], fmt.history_hash([5, 6, 9]))]


def test_a_sample_is_keyed_by_the_history_it_got_even_after_another_forward(tmp_path):
    model, tokenizer = bundled()
    recorder = ProbeRecorder(tmp_path / "c")
    m, _, s = recorder.wrap(model, tokenizer, TokenSamplerIsok(seed=1))
    out = m(input_ids=torch.tensor([[5, 6, 7]]), use_cache=True)
    logits = out.logits[:, -1, :]
    s.sample(logits, torch.tensor([[5, 6, 7]]), PARAMS.sampling)  # the forward's own history
    s.sample(logits, torch.tensor([[5, 6, 4]]), PARAMS.sampling)  # the same length, another history
    recorder.close()
    samples = list(fmt.load_cassette(tmp_path / "c").samples())
    assert [s["h"] for s in samples] == [fmt.history_hash([5, 6, 7]), fmt.history_hash([5, 6, 4])]
