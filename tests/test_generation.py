import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatstream.bundled import bundled_model_path
from chatstream.cassettes.recording import ProbeRecorder
from chatstream.cassettes.replay import MockTransformer
from chatstream.engine.chat_prompt import ChatPromptFromTemplate
from chatstream.engine.chat_prompt_presets import ChatPromptChatML
from chatstream.engine.events import FinishEvent, FinishReason, TokenEvent
from chatstream.engine.generation import ChatGenerator, GenerationParams, build_input_ids, decode_tokens, eos_token_ids
from chatstream.engine.sampling import SamplingParams
from chatstream.engine.token_sampler import TokenSamplerIsok
from chatstream.exceptions import ConfigurationError, PromptTooLongError

GREEDY = GenerationParams(temperature=0, max_new_tokens=24)


@pytest.fixture(scope="module")
def model_and_tokenizer():
    path = bundled_model_path()
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def ask(tokenizer, *turns: str, system: str = ""):
    prompt = ChatPromptFromTemplate(tokenizer, system=system)
    for i, turn in enumerate(turns):
        if i % 2 == 0:
            prompt.add_requester_msg(turn)
        else:
            prompt.add_responder_msg(turn)
    prompt.add_responder_msg(None)
    return prompt


def test_greedy_loop_matches_transformers_generate(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    ids, _ = build_input_ids(ask(tokenizer, "Hello"), tokenizer, GREEDY)
    ours = list(
        decode_tokens(model, ids, sampler=TokenSamplerIsok(), sampling=SamplingParams(temperature=0),
                      max_new_tokens=24, eos_ids=set(), device=torch.device("cpu"))
    )
    theirs = model.generate(torch.tensor([ids]), max_new_tokens=24, min_new_tokens=24, do_sample=False,
                            eos_token_id=None, pad_token_id=0)
    assert ours == theirs[0, len(ids):].tolist()


def test_answer_stops_at_eos_and_streams_utf8(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    generator = ChatGenerator(model, tokenizer, "cpu", GenerationParams(temperature=0, max_new_tokens=60))
    deltas = list(generator.stream(ask(tokenizer, "こんにちは")))
    text = "".join(deltas)
    assert text and "\ufffd" not in text
    assert "<|im_end|>" not in text
    assert len(tokenizer.encode(text, add_special_tokens=False)) < 60, "the answer should end on EOS"


def test_max_new_tokens_bounds_the_answer(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    generator = ChatGenerator(model, tokenizer, "cpu", GenerationParams(temperature=0, max_new_tokens=3))
    tokens = []
    ids, budget = build_input_ids(ask(tokenizer, "Hello"), tokenizer, generator.params)
    for token in decode_tokens(model, ids, sampler=generator.token_sampler, sampling=SamplingParams(temperature=0),
                               max_new_tokens=budget, eos_ids=generator.eos_ids, device=generator.device):
        tokens.append(token)
    assert len(tokens) <= 3


def test_stop_string_ends_generation(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    full = ChatGenerator(model, tokenizer, "cpu", GREEDY).generate_text(ask(tokenizer, "Hello"))
    assert len(full) > 4
    stop = full[3:5]

    class StopPrompt(ChatPromptFromTemplate):
        def get_stop_strs(self):
            return [stop]

    prompt = StopPrompt(tokenizer)
    prompt.add_requester_msg("Hello")
    prompt.add_responder_msg(None)
    cut = ChatGenerator(model, tokenizer, "cpu", GREEDY).generate_text(prompt)
    assert cut == full[: full.index(stop)]


def test_same_seed_same_answer_at_temperature(model_and_tokenizer):
    """At a temperature where the bundled model's draws show (1.5, EOS ignored: at 1.0 its answers up to EOS
    are the greedy one), one seed gives one answer and another seed another."""
    model, tokenizer = model_and_tokenizer
    params = GenerationParams(temperature=1.5, top_k=None, max_new_tokens=32, seed=42)

    def answer(params):
        generator = ChatGenerator(model, tokenizer, "cpu", params)
        generator.eos_ids = set()
        return generator.generate_text(ask(tokenizer, "Hello"))

    first = answer(params)
    assert answer(params) == first
    assert answer(params.replace(seed=43)) != first


def test_truncation_drops_oldest_turns_but_keeps_system(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    prompt = ask(tokenizer, "first question " * 10, "first answer " * 10, "second question", system="SYSTEM")
    full_ids, _ = build_input_ids(prompt, tokenizer, GenerationParams(context_len=1024, max_new_tokens=8))
    short_budget = GenerationParams(context_len=len(full_ids) + 8 - 1, max_new_tokens=8)
    ids, room = build_input_ids(prompt, tokenizer, short_budget)
    text = tokenizer.decode(ids)
    assert "SYSTEM" in text and "second question" in text and "first" not in text
    assert room == 8
    assert prompt.get_turn() == 2, "the stored history is never changed"


def test_truncation_shrinks_new_tokens_when_last_turn_alone_is_long(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    prompt = ask(tokenizer, "hello")
    ids, _ = build_input_ids(prompt, tokenizer, GREEDY)
    ids2, room = build_input_ids(prompt, tokenizer, GenerationParams(context_len=len(ids) + 2, max_new_tokens=50))
    assert ids2 == ids and room == 2


def test_prompt_that_cannot_fit_raises_clear_error(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    with pytest.raises(PromptTooLongError, match="context_len is 16"):
        build_input_ids(ask(tokenizer, "a long question " * 20), tokenizer,
                        GenerationParams(context_len=16, max_new_tokens=4))


def test_chatml_preset_and_template_give_same_ids(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    hand = ChatPromptChatML()
    hand.add_requester_msg("Hello")
    hand.add_responder_msg(None)
    params = GenerationParams(add_special_tokens=False)
    assert build_input_ids(hand, tokenizer, params) == build_input_ids(ask(tokenizer, "Hello"), tokenizer, params)


def test_eos_ids_include_model_generation_config(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in eos_token_ids(model, tokenizer)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"max_new_tokens": 0}, "`max_new_tokens` (=0)"), ({"context_len": "1k"}, "`context_len`"),
     ({"seed": 1.5}, "`seed`"), ({"temperature": -1}, "`temperature`"), ({"add_special_tokens": "no"}, "True, False")],
)
def test_params_validate(kwargs, fragment):
    with pytest.raises(ConfigurationError) as excinfo:
        GenerationParams(**kwargs)
    assert fragment in str(excinfo.value)


def test_params_replace_rejects_unknown_names():
    assert GenerationParams().replace(top_k=5).top_k == 5
    with pytest.raises(ConfigurationError, match="unknown generation parameter"):
        GenerationParams().replace(topk=5)


def test_generator_needs_model_or_mock():
    with pytest.raises(ConfigurationError, match="use_mock_response"):
        ChatGenerator(None, None)


def test_should_stop_cancels_between_steps(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    generator = ChatGenerator(model, tokenizer, "cpu", GenerationParams(temperature=0, max_new_tokens=50))
    deltas = list(generator.stream(ask(tokenizer, "Hello"), should_stop=lambda: True))
    assert len(deltas) <= 1


def test_stop_strings_in_the_params_end_the_answer_before_them(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    full = ChatGenerator(model, tokenizer, "cpu", GREEDY).generate_text(ask(tokenizer, "Hello"))
    assert full == "Hello! How can I help you today?"
    cut = ChatGenerator(model, tokenizer, "cpu", GREEDY.replace(stop_strings=["How", "never"]))
    assert cut.generate_text(ask(tokenizer, "Hello")) == "Hello! "


def test_extra_eos_token_ids_end_the_answer_at_that_token(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompt_ids, _ = build_input_ids(ask(tokenizer, "Hello"), tokenizer, GREEDY)
    tokens = list(decode_tokens(model, prompt_ids, sampler=TokenSamplerIsok(), sampling=SamplingParams(temperature=0),
                                max_new_tokens=24, eos_ids=eos_token_ids(model, tokenizer), device=torch.device("cpu")))
    third = tokens[2]
    generator = ChatGenerator(model, tokenizer, "cpu", GREEDY.replace(eos_token_ids=[third]))
    text = generator.generate_text(ask(tokenizer, "Hello"))
    assert text == tokenizer.decode(tokens[:2]) and third not in generator.eos_ids, "the server's own set is kept"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"stop_strings": "###"}, "`stop_strings` (='###') must be a list"), ({"stop_strings": [""]}, "non-empty"),
     ({"stop_strings": [3]}, "non-empty str"), ({"eos_token_ids": [-1]}, "token id"),
     ({"eos_token_ids": [True]}, "token id"), ({"eos_token_ids": 5}, "must be a list of token ids")],
)
def test_stopping_params_validate(kwargs, fragment):
    with pytest.raises(ConfigurationError) as excinfo:
        GenerationParams(**kwargs)
    assert fragment in str(excinfo.value)


def test_stopping_params_round_trip_through_json_as_lists():
    params = GenerationParams(stop_strings=["a", "b"], eos_token_ids=[7])
    data = params.to_dict()
    assert data["stop_strings"] == ["a", "b"] and data["eos_token_ids"] == [7]
    assert GenerationParams(**data) == params and hash(params) == hash(GenerationParams(**data))


# -- per-token events ------------------------------------------------------------------------------


def test_events_give_each_token_then_why_and_how_many(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    generator = ChatGenerator(model, tokenizer, "cpu", GenerationParams(temperature=0, max_new_tokens=60))
    prompt = ask(tokenizer, "Hello")
    events = list(generator.events(prompt))
    *tokens, finish = events
    assert isinstance(finish, FinishEvent) and all(isinstance(e, TokenEvent) for e in tokens)
    assert finish.finish_reason is FinishReason.STOP
    assert finish.prompt_tokens == len(build_input_ids(prompt, tokenizer, generator.params)[0])
    assert finish.completion_tokens == len(tokens) + 1, "the EOS token counts as generated"
    assert "".join(e.text for e in events) == "".join(generator.stream(prompt)) == tokenizer.decode(
        [e.token_id for e in tokens])
    assert all(e.logprob is None and e.top_logprobs == () for e in tokens), "no logprobs unless asked"


def test_events_report_length_and_stop_strings(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    short = list(ChatGenerator(model, tokenizer, "cpu", GREEDY.replace(max_new_tokens=3)).events(ask(tokenizer, "Hi")))
    assert short[-1].finish_reason is FinishReason.LENGTH and short[-1].completion_tokens == 3 == len(short) - 1
    cut = list(ChatGenerator(model, tokenizer, "cpu", GREEDY.replace(stop_strings=["How"])).events(
        ask(tokenizer, "Hello")))
    assert cut[-1].finish_reason is FinishReason.STOP and "".join(e.text for e in cut) == "Hello! "
    stopped = list(ChatGenerator(model, tokenizer, "cpu", GREEDY).events(ask(tokenizer, "Hello"),
                                                                        should_stop=lambda: True))
    assert stopped[-1].finish_reason is FinishReason.CANCELLED and stopped[-1].completion_tokens == 1


def test_logprobs_come_from_the_processed_distribution_the_sampler_drew_from(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    params = GenerationParams(temperature=0.5, top_k=3, seed=5, max_new_tokens=6)
    prompt = ask(tokenizer, "Hello")
    events = list(ChatGenerator(model, tokenizer, "cpu", params).events(prompt, logprobs=5))[:-1]
    first = events[0]
    ids, _ = build_input_ids(prompt, tokenizer, params)
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0, -1].float()
    expected = (logits / 0.5).masked_fill(logits < logits.topk(3).values[-1], -float("inf")).log_softmax(-1)
    assert first.logprob == pytest.approx(float(expected[first.token_id]), abs=1e-4)
    assert [t for t, _ in first.top_logprobs[:3]] == expected.topk(3).indices.tolist()
    assert all(lp == -float("inf") for _, lp in first.top_logprobs[3:]), "top-k left only 3 tokens possible"
    assert sum(math.exp(lp) for _, lp in first.top_logprobs) == pytest.approx(1.0, abs=1e-4)
    assert all(e.logprob <= 0 and len(e.top_logprobs) == 5 for e in events)
    same = list(ChatGenerator(model, tokenizer, "cpu", params).events(prompt, logprobs=0))[:-1]
    assert [e.token_id for e in same] == [e.token_id for e in events], "asking for logprobs changes no token"
    assert [e.logprob for e in same] == [e.logprob for e in events] and same[0].top_logprobs == ()


@pytest.mark.parametrize("bad", [-1, 21, 2.0, True])
def test_logprobs_count_is_validated(model_and_tokenizer, bad):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(ConfigurationError, match=r"`logprobs` \(="):
        next(ChatGenerator(model, tokenizer, "cpu", GREEDY).events(ask(tokenizer, "Hi"), logprobs=bad))


def test_presence_and_frequency_penalties_reach_the_sampler(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompt = ask(tokenizer, "Hello")
    hello = tokenizer.encode("Hello", add_special_tokens=False)
    plain = next(ChatGenerator(model, tokenizer, "cpu", GREEDY).events(prompt, logprobs=1))
    penalised = ChatGenerator(model, tokenizer, "cpu", GREEDY.replace(frequency_penalty=2.0, presence_penalty=2.0))
    first = next(penalised.events(prompt, logprobs=1))
    assert plain.token_id == first.token_id == hello[0], "the tiny model is sure of its first token"
    assert first.logprob < plain.logprob, "a token the prompt holds is penalised"
    with pytest.raises(ConfigurationError, match="presence_penalty"):
        GREEDY.replace(presence_penalty=3)


def test_replayed_logprobs_equal_the_live_ones(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    params = GenerationParams(temperature=0.8, top_k=20, seed=3, max_new_tokens=8, presence_penalty=0.5)
    with ProbeRecorder(tmp_path / "c", fidelity="exact") as recorder:
        m, t, s = recorder.wrap(model, tokenizer, TokenSamplerIsok())
        live = list(ChatGenerator(m, t, "cpu", params, s).events(ask(t, "Hello"), logprobs=3))
    mock = MockTransformer.from_path(tmp_path / "c")
    replay = ChatGenerator(mock.get_model(), mock.get_tokenizer(), "cpu", params, mock.get_token_sampler())
    assert list(replay.events(ask(mock.get_tokenizer(), "Hello"), logprobs=3)) == live
