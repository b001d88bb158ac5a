"""Constrained decoding in the engine: compile once, mask per stream, EOS only where the grammar accepts."""

import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatstream.bundled import bundled_model_path
from chatstream.engine.batched_generator import BatchedChatGenerator
from chatstream.engine.chat_prompt import ChatPromptFromTemplate
from chatstream.engine.constraints import Constraint, ConstraintCompiler, token_bytes
from chatstream.engine.events import FinishReason
from chatstream.engine.generation import ChatGenerator, GenerationParams
from chatstream.exceptions import ConfigurationError, ConstraintError


@pytest.fixture(scope="module")
def tiny():
    path = bundled_model_path()
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def ask(tokenizer, text="Hello"):
    prompt = ChatPromptFromTemplate(tokenizer)
    prompt.add_requester_msg(text)
    prompt.add_responder_msg(None)
    return prompt


def test_constraint_values_keys_and_dicts():
    schema = Constraint.json_schema({"b": 1, "type": "object"})
    assert schema == Constraint.json_schema('{"type": "object", "b": 1}'), "canonical: key order does not matter"
    assert schema.key.startswith("json_schema:") and schema.key != Constraint.regex("a").key
    assert Constraint.from_dict(schema.to_dict()) == schema
    with pytest.raises(ConfigurationError, match="kind"):
        Constraint("xml", "")
    with pytest.raises(ConstraintError, match="not valid JSON"):
        Constraint.json_schema("{")
    params = GenerationParams(constraint=Constraint.regex("[ab]+"), logit_bias={"3": -100})
    assert GenerationParams(**params.to_dict()) == params
    assert "constraint" not in GenerationParams().to_dict()
    assert "logit_bias" not in GenerationParams().sampling.to_dict()
    assert params.sampling.to_dict()["constraint"] == params.constraint.key


def test_token_bytes_of_byte_level_and_sentencepiece_names():
    assert token_bytes(["Ġhi", "Ċ", "Ã©", "<0x0A>", None]) == [b" hi", b"\n", "é".encode(), b"<0x0A>", b""]
    assert token_bytes(["▁hi", "<0x0A>", "é"]) == [b" hi", b"\n", "é".encode()]


def test_eos_is_allowed_only_where_the_grammar_accepts(tiny):
    _, tokenizer = tiny
    compiler = ConstraintCompiler(tokenizer)
    state = compiler.start(Constraint.regex("ab"), {2})
    logits = torch.zeros(1, len(tokenizer))
    assert state.mask(logits)[0, 2] == float("-inf")
    for token in tokenizer.encode("ab", add_special_tokens=False):
        assert state.mask(logits)[0, token] == 0
        state.advance(token)
    masked = state.mask(logits)
    assert masked[0, 2] == 0 and int((masked[0] == 0).sum()) == 1, "complete: only EOS is left"
    with pytest.raises(ConstraintError, match="breaks"):
        compiler.start(Constraint.regex("ab"), {2}).advance(tokenizer.encode("z", add_special_tokens=False)[0])
    assert compiler.compile(Constraint.regex("ab")) is compiler.compile(Constraint.regex("ab")), "compiled once"
    with pytest.raises(ConstraintError, match="unclosed group"):
        compiler.compile(Constraint.regex("(ab"))


@pytest.mark.parametrize("batched", [False, True])
def test_a_regex_holds_for_sampled_answers_in_both_generators(tiny, batched):
    model, tokenizer = tiny
    generator = BatchedChatGenerator(model, tokenizer, "cpu", capacity=2) if batched else \
        ChatGenerator(model, tokenizer)
    pattern = r"(yes|no), [0-9]{2} cats"
    try:
        for seed in range(3):
            params = GenerationParams(max_new_tokens=30, seed=seed, temperature=1.5,
                                      constraint=Constraint.regex(pattern))
            events = list(generator.events(ask(tokenizer), params))
            text = "".join(e.text for e in events)
            assert re.fullmatch(pattern, text) and events[-1].finish_reason is FinishReason.STOP
            free = generator.generate_text(ask(tokenizer), params.replace(constraint=None))
            assert not re.fullmatch(pattern, free)
    finally:
        if batched:
            generator.close()
