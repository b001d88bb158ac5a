"""Continuous batching on the bundled model: batched streams give what each gives alone, seeds hold under any
batch mix, streams join and leave mid-batch, and cassettes replay batched or not whichever way they were recorded."""

import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from _probe_support import ask, bundled
from _serving_fakes import SlowModel, word_tokenizer
from transformers import MistralConfig, MistralForCausalLM

from chatstream import ChatGenerator, ChatPromptFromTemplate, MockTransformer
from chatstream.cassettes.recording import ProbeRecorder
from chatstream.engine.batched_generator import BatchedChatGenerator
from chatstream.engine.chat_prompt_presets import ChatPromptChatML
from chatstream.engine.events import FinishReason
from chatstream.engine.generation import GenerationParams, build_input_ids
from chatstream.engine.model_cache import cache_argument
from chatstream.engine.token_sampler import TokenSamplerIsok
from chatstream.exceptions import ConfigurationError
from chatstream.serving.chat_stream import ChatStream
from chatstream.serving.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["Hello", "こんにちは", "What is your name?", "How is the weather?", "Do you like cats?", "Thanks",
           "Tell me about dogs", "Goodbye", "Good morning", "How are you?"]
GREEDY = GenerationParams(temperature=0, max_new_tokens=48)


def ids_of(tokenizer, text, params=GREEDY):
    return build_input_ids(ask(tokenizer, text), tokenizer, params)[0]


def run_together(jobs):
    """Run each zero-argument callable in its own thread, all released at once; their results in order."""
    results, errors = [None] * len(jobs), []
    barrier = threading.Barrier(len(jobs))

    def run(i):
        barrier.wait()
        try:
            results[i] = jobs[i]()
        except Exception as error:  # re-raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if errors:
        raise errors[0]
    return results


def alone(model, tokenizer, text, params=GREEDY, sampler=None):
    return ChatGenerator(model, tokenizer, "cpu", params, token_sampler=sampler).generate_text(ask(tokenizer, text))


def continuation(generator, input_ids, params, max_new_tokens, **kw):
    return "".join(generator.stream_ids(input_ids, params, max_new_tokens, **kw))


@pytest.fixture
def batched():
    made = []

    def make(model=None, tokenizer=None, capacity=8, **kw):
        if model is None:
            model, tokenizer = bundled()
        generator = BatchedChatGenerator(model, tokenizer, "cpu", capacity=capacity, **kw)
        made.append(generator)
        return generator

    yield make
    for generator in made:
        generator.close()


def test_greedy_streams_batched_give_the_tokens_each_gives_alone(batched):
    model, tokenizer = bundled()
    expected = [alone(model, tokenizer, text) for text in PROMPTS]
    generator = batched(capacity=len(PROMPTS), params=GREEDY)
    got = run_together([lambda t=text: generator.generate_text(ask(tokenizer, t)) for text in PROMPTS])
    assert got == expected
    assert generator.engine.peak_batch >= 4, "the streams should have shared forwards"


def alone_full_length(model, tokenizer, text, params):
    """``ChatGenerator``'s answer with EOS ignored, so it runs to ``params.max_new_tokens``."""
    generator = ChatGenerator(model, tokenizer, "cpu", params)
    generator.eos_ids = set()
    return generator.generate_text(ask(tokenizer, text))


@pytest.mark.parametrize("params", [
    GenerationParams(temperature=0, max_new_tokens=128),
    GenerationParams(temperature=1.5, top_k=None, seed=7, max_new_tokens=128),
], ids=["greedy", "sampled"])
def test_long_continuations_past_eos_batched_match_the_per_stream_generator(batched, params):
    """128 tokens each, EOS ignored: long padded rows of different lengths decode as ChatGenerator decodes each
    alone, greedy and sampled (each stream's seeded draws are its own, whatever shares the batch)."""
    model, tokenizer = bundled()
    expected = [alone_full_length(model, tokenizer, text, params) for text in PROMPTS[:8]]
    generator = batched(capacity=8, params=params)
    generator.eos_ids = set()
    got = run_together([lambda t=text: generator.generate_text(ask(tokenizer, t)) for text in PROMPTS[:8]])
    assert got == expected
    assert generator.engine.peak_batch == 8
    if params.temperature:  # the settings must be ones where sampling shows: another seed, another answer
        assert alone_full_length(model, tokenizer, PROMPTS[0], params.replace(seed=8)) != expected[0]


def test_streams_join_and_leave_a_running_batch(batched):
    _model, tokenizer = bundled()
    params = GenerationParams(temperature=0, max_new_tokens=96)
    generator = batched(capacity=8)
    generator.eos_ids = set()
    prompts = [ids_of(tokenizer, text) for text in PROMPTS[:5]]
    reference = batched(capacity=1)
    reference.eos_ids = set()
    expected = [continuation(reference, ids, params, n) for ids, n in zip(prompts, (96, 96, 96, 6, 40), strict=True)]

    first_three = [iter(generator.stream_ids(ids, params, 96)) for ids in prompts[:3]]
    heads = [next(stream) for stream in first_three]  # all three are running now
    results = [None] * 5

    def drain(i, stream, head):
        results[i] = head + "".join(stream)

    threads = [threading.Thread(target=drain, args=(i, s, h)) for i, (s, h) in enumerate(zip(first_three, heads,
                                                                                               strict=True))]
    for thread in threads:
        thread.start()
    joined_at = time.perf_counter()
    short = generator.stream_ids(prompts[3], params, 6)  # joins, then leaves after 6 tokens
    late = iter(generator.stream_ids(prompts[4], params, 40))
    results[3] = "".join(short)
    first_late = next(late)
    waited = time.perf_counter() - joined_at
    results[4] = first_late + "".join(late)
    assert any(thread.is_alive() for thread in threads), "the joiners must not wait for the running streams to end"
    for thread in threads:
        thread.join(60)
    assert results == expected
    assert generator.engine.peak_batch == 4, "the short stream left before the late one joined"
    assert waited < 30


def test_cancelling_one_stream_leaves_the_others_bytes_unchanged(batched):
    _model, tokenizer = bundled()
    params = GenerationParams(temperature=0.8, top_k=40, seed=11, max_new_tokens=64)
    generator = batched(capacity=4)
    generator.eos_ids = set()
    prompts = [ids_of(tokenizer, text) for text in PROMPTS[:4]]
    undisturbed = run_together([lambda ids=ids: continuation(generator, ids, params, 64) for ids in prompts])
    stop = threading.Event()
    pieces = []

    def cancelled():
        for delta in generator.stream_ids(prompts[0], params, 64, should_stop=stop.is_set):
            pieces.append(delta)
            if len(pieces) == 5:
                stop.set()
        return "".join(pieces)

    jobs = [cancelled] + [lambda ids=ids: continuation(generator, ids, params, 64) for ids in prompts[1:]]
    got = run_together(jobs)
    assert got[1:] == undisturbed[1:]
    assert len(pieces) == 5 and undisturbed[0].startswith(got[0]) and got[0] != undisturbed[0]
    assert generator.engine.running == 0


def test_a_seeded_stream_gives_the_same_tokens_whatever_shares_the_batch(batched):
    _model, tokenizer = bundled()
    seeded = GenerationParams(temperature=1.3, top_k=None, top_p=0.95, repetition_penalty=1.1, seed=1234,
                              max_new_tokens=64)
    target = ids_of(tokenizer, "Do you like cats?", seeded)
    generator = batched(capacity=8)
    generator.eos_ids = set()
    by_itself = continuation(generator, target, seeded, 64)
    others = [ids_of(tokenizer, text) for text in PROMPTS[:7]]
    mixes = [
        [GenerationParams(temperature=0, max_new_tokens=64)] * 3,
        [GenerationParams(temperature=2.0, seed=i, max_new_tokens=30 + 5 * i) for i in range(7)],
    ]
    for mix in mixes:
        jobs = [lambda: continuation(generator, target, seeded, 64)]
        jobs += [lambda ids=ids, p=p: continuation(generator, ids, p, p.max_new_tokens)
                 for ids, p in zip(others, mix, strict=False)]
        assert run_together(jobs)[0] == by_itself
    assert generator.engine.peak_batch == 8
    assert by_itself != continuation(generator, target, seeded.replace(seed=4321), 64), "the seed must matter"


def test_the_engine_never_runs_more_than_its_capacity(batched):
    model, tokenizer = bundled()
    generator = batched(capacity=3, params=GREEDY)
    got = run_together([lambda t=text: generator.generate_text(ask(tokenizer, t)) for text in PROMPTS])
    assert got == [alone(model, tokenizer, text) for text in PROMPTS]
    assert generator.engine.peak_batch == 3


# -- recording and replay ---------------------------------------------------------------------------------------

SAMPLED = GenerationParams(temperature=1.5, top_k=40, seed=99, max_new_tokens=40)


def _record(path, batched_run):
    model, tokenizer = bundled()
    recorder = ProbeRecorder(path)
    rmodel, rtokenizer, rsampler = recorder.wrap(model, tokenizer, TokenSamplerIsok())
    if batched_run:
        generator = BatchedChatGenerator(rmodel, rtokenizer, "cpu", SAMPLED, rsampler, capacity=len(PROMPTS))
        answers = run_together([lambda t=t: generator.generate_text(ask(rtokenizer, t)) for t in PROMPTS])
        assert generator.engine.peak_batch >= 4
        generator.close()
    else:
        generator = ChatGenerator(rmodel, rtokenizer, "cpu", SAMPLED, rsampler)
        answers = [generator.generate_text(ask(rtokenizer, t)) for t in PROMPTS]
    recorder.close()
    return answers


def _replay(path, batched_run):
    mock = MockTransformer.from_path(path)
    model, tokenizer, sampler = mock.get_model(), mock.get_tokenizer(), mock.get_token_sampler()
    if batched_run:
        generator = BatchedChatGenerator(model, tokenizer, "cpu", SAMPLED, sampler, capacity=len(PROMPTS))
        answers = run_together([lambda t=t: generator.generate_text(ask(tokenizer, t)) for t in reversed(PROMPTS)])
        assert generator.engine.peak_batch >= 4
        generator.close()
        return answers[::-1]
    generator = ChatGenerator(model, tokenizer, "cpu", SAMPLED, sampler)
    return [generator.generate_text(ask(tokenizer, t)) for t in PROMPTS]


@pytest.mark.parametrize("recorded_batched", [True, False], ids=["recorded-batched", "recorded-alone"])
def test_a_cassette_replays_byte_identically_batched_or_not(tmp_path, recorded_batched):
    recorded = _record(tmp_path / "c", recorded_batched)
    model, tokenizer = bundled()
    assert recorded == [alone(model, tokenizer, t, SAMPLED) for t in PROMPTS]
    for replay_batched in (not recorded_batched, recorded_batched):
        replayed = _replay(tmp_path / "c", replay_batched)
        assert [r.encode() for r in replayed] == [r.encode() for r in recorded], (recorded_batched, replay_batched)


def test_the_committed_version_cassettes_replay_batched():
    sys.path.insert(0, str(ROOT / "tools"))
    from record_version_cassette import CONVERSATIONS
    from test_cassette_versions import EXPECTED

    for path in sorted((ROOT / "fixtures" / "version-cassettes").iterdir()):
        mock = MockTransformer.from_path(path)
        tokenizer = mock.get_tokenizer()
        generator = BatchedChatGenerator(mock.get_model(), tokenizer, "cpu", token_sampler=mock.get_token_sampler(),
                                         capacity=len(CONVERSATIONS))

        def answer(text, params, tokenizer=tokenizer, generator=generator):
            prompt = ChatPromptFromTemplate(tokenizer)
            prompt.add_requester_msg(text)
            prompt.add_responder_msg(None)
            return generator.generate_text(prompt, params)

        got = run_together([lambda t=t, p=p: answer(t, p) for t, p in CONVERSATIONS])
        generator.close()
        assert got == [EXPECTED[t] for t, _ in CONVERSATIONS], path.name


# -- models it cannot batch, and the switches -----------------------------------------------------------------


def test_a_model_without_per_row_positions_is_refused_at_construction():
    tokenizer = word_tokenizer()
    with pytest.raises(ConfigurationError, match=r"position_ids.*batching=False"):
        BatchedChatGenerator(SlowModel(tokenizer), tokenizer, "cpu")
    with pytest.raises(ConfigurationError, match="batching=False"):
        ChatStream(model=SlowModel(tokenizer), tokenizer=tokenizer, batching=True)
    serving = ChatStream(model=SlowModel(tokenizer), tokenizer=tokenizer, chat_prompt_clazz=ChatPromptChatML)
    assert isinstance(serving.chat_generator, ChatGenerator)  # batching off (the default): the per-stream loop


def test_a_sliding_window_model_is_refused_at_construction():
    config = MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=64, sliding_window=8)
    tokenizer = word_tokenizer()
    with pytest.raises(ConfigurationError, match="SlidingWindow"):
        BatchedChatGenerator(MistralForCausalLM(config).eval(), tokenizer, "cpu")


def test_by_default_a_model_batching_cannot_serve_gets_the_per_stream_loop_and_the_reason_is_logged(caplog):
    config = MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=64, sliding_window=8)
    with caplog.at_level("INFO", logger="chatstream"):
        chat_stream = ChatStream(model=MistralForCausalLM(config).eval(), tokenizer=word_tokenizer(), device="cpu",
                                 chat_prompt_clazz=ChatPromptChatML)
    assert isinstance(chat_stream.chat_generator, ChatGenerator)
    assert "without continuous batching" in caplog.text and "SlidingWindow" in caplog.text
    with pytest.raises(ConfigurationError, match="SlidingWindow"):  # asked for explicitly: refused
        ChatStream(model=MistralForCausalLM(config).eval(), tokenizer=word_tokenizer(), device="cpu", batching=True,
                   chat_prompt_clazz=ChatPromptChatML)


def test_chat_stream_batching_switch_builds_the_batched_generator():
    model, tokenizer = bundled()
    chat_stream = ChatStream(model=model, tokenizer=tokenizer, batching=True, num_of_concurrent_executions=3)
    assert isinstance(chat_stream.chat_generator, BatchedChatGenerator)
    assert chat_stream.chat_generator.engine.capacity == 3
    chat_stream.close()
    by_default = ChatStream(model=model, tokenizer=tokenizer)
    assert isinstance(by_default.chat_generator, BatchedChatGenerator), "a model that allows it is batched"
    by_default.close()
    assert isinstance(ChatStream(model=model, tokenizer=tokenizer, batching=False).chat_generator, ChatGenerator)
    with pytest.raises(ConfigurationError, match="use_mock_response"):
        ChatStream(use_mock_response=True, batching=True)
    with pytest.raises(ConfigurationError, match="batching"):
        ChatStream(model=model, tokenizer=tokenizer, batching="yes")


def test_serve_has_a_batching_switch():
    parser = build_parser()
    assert parser.parse_args(["serve", "--batching"]).batching is True
    assert parser.parse_args(["serve", "--no-batching"]).batching is False
    assert parser.parse_args(["serve"]).batching is None, "by default: batched when the model allows it"


def test_a_forward_that_fails_ends_every_stream_of_that_step_with_the_error(batched):
    model, tokenizer = bundled()

    class Failing(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.config, self.generation_config = model, model.config, model.generation_config
            self.calls = 0

        def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None,
                    past_key_values=None, use_cache=None, logits_to_keep=0):
            self.calls += 1
            if input_ids.shape[0] > 1:
                raise RuntimeError("simulated batched failure")
            given = {cache_argument(model): cache if cache is not None else past_key_values}
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=use_cache, logits_to_keep=logits_to_keep, **given)

    generator = batched(Failing(), tokenizer, capacity=2, params=GREEDY)
    generator.eos_ids = set()
    ids = [ids_of(tokenizer, t) for t in PROMPTS[:2]]
    errors = []

    def one(i):
        try:
            return continuation(generator, ids[i], GREEDY, 30)
        except RuntimeError as error:
            errors.append(str(error))
            return None

    run_together([lambda: one(0), lambda: one(1)])
    assert errors == ["simulated batched failure"] * 2
    assert continuation(generator, ids[0], GREEDY, 5), "the engine goes on after a failed step"


# -- serving ---------------------------------------------------------------------------------------------------


class GatedSampler(TokenSamplerIsok):
    """Holds the scheduler thread in its first draw until ``gate`` is set, counting the rows it was asked for."""

    def __init__(self):
        super().__init__(seed=0)
        self.gate = threading.Event()
        self.calls = 0

    def sample(self, logits, input_ids, params, generator=None):
        self.calls += 1
        self.gate.wait(60)
        return super().sample(logits, input_ids, params, generator)


async def test_a_burst_of_200_against_batching_admits_exactly_7_and_frees_every_slot(serve):
    import asyncio

    import httpx
    from test_http_server import SECRET, app_for, client, load, until

    model, tokenizer = bundled()
    sampler = GatedSampler()
    chat_stream = ChatStream(model=model, tokenizer=tokenizer, device="cpu", batching=True, token_sampler=sampler,
                             num_of_concurrent_executions=2, max_queue_size=5, too_many_request_as_http_error=True,
                             session_secret=SECRET, temperature=0, max_new_tokens=12)
    base_url = serve(app_for(chat_stream))
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with client(base_url, share_cookies=False, limits=limits) as http_client:

        async def one(i):
            async with http_client.stream("POST", "/chat_stream", json={"user_input": PROMPTS[i % 4]}) as response:
                return response.status_code, await response.aread()

        tasks = [asyncio.create_task(one(i)) for i in range(200)]

        async def refused_all_others():
            return sum(t.done() for t in tasks) == 193

        await until(refused_all_others, timeout=60)
        worker = await load(http_client)
        assert (worker["running"], worker["waiting"]) == (2, 5)

        async def holding_a_generation():  # its prefill may still run on a loaded machine
            return sampler.calls >= 1

        await until(holding_a_generation, timeout=60)
        sampler.gate.set()
        results = await asyncio.gather(*tasks)
        statuses = [status for status, _ in results]
        assert statuses.count(200) == 7 and statuses.count(429) == 193
        answers = {alone(model, tokenizer, text, GenerationParams(temperature=0, max_new_tokens=12)).encode()
                   for text in PROMPTS[:4]}
        assert all(body.removesuffix(b"<::EOS::>").split(b"<::EOS::>")[-1] in answers
                   for status, body in results if status == 200)
        assert chat_stream.chat_generator.engine.peak_batch == 2, "never more than num_of_concurrent_executions"
        worker = await load(http_client)
        assert (worker["running"], worker["waiting"]) == (0, 0)
    assert chat_stream.admission.stats()["running"] == 0 and chat_stream.chat_generator.engine.running == 0
    chat_stream.close()


def test_batched_events_match_the_per_stream_events_logprobs_usage_and_finish_reason():
    model, tokenizer = bundled()
    serial = ChatGenerator(model, tokenizer, "cpu", GenerationParams(temperature=0, max_new_tokens=24))
    batched = BatchedChatGenerator(model, tokenizer, "cpu", GenerationParams(temperature=0, max_new_tokens=24),
                                   capacity=4)
    try:
        reasons = []
        for text, params in (("Hello", None), ("こんにちは", GenerationParams(temperature=0, max_new_tokens=5))):
            expected = list(serial.events(ask(tokenizer, text), params, logprobs=3))
            got = list(batched.events(ask(tokenizer, text), params, logprobs=3))
            assert [type(e) for e in got] == [type(e) for e in expected]
            assert got[-1] == expected[-1]  # the finish reason and the usage counts
            reasons.append(got[-1].finish_reason)
            for mine, theirs in zip(got[:-1], expected[:-1], strict=True):
                assert (mine.token_id, mine.text) == (theirs.token_id, theirs.text)
                assert mine.logprob == pytest.approx(theirs.logprob, abs=1e-5)
                assert [t for t, _ in mine.top_logprobs] == [t for t, _ in theirs.top_logprobs]
        assert reasons == [FinishReason.STOP, FinishReason.LENGTH]
    finally:
        batched.close()
