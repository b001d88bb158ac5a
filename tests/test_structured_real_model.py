"""Structured outputs on the real chat model (SmolLM2-135M-Instruct): a schema of nested objects, arrays and
enums holds for 20 prompts with the constraint; the same prompts without it show how often the model breaks it."""

import json
import os
import threading
from pathlib import Path

import jsonschema
import pytest

from chatstream.engine.batched_generator import BatchedChatGenerator
from chatstream.engine.chat_prompt import ChatPromptFromTemplate
from chatstream.engine.constraints import Constraint
from chatstream.engine.generation import GenerationParams

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "address": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 40},
            "country": {"enum": ["France", "Japan", "Brazil", "Canada", "Kenya", "Other"]}},
            "required": ["city", "country"], "additionalProperties": False},
        "hobbies": {"type": "array", "maxItems": 4, "items": {"enum": ["music", "sport", "reading", "cooking",
                                                                        "travel", "games"]}},
        "status": {"enum": ["student", "employed", "retired"]},
    },
    "required": ["name", "age", "address", "hobbies", "status"],
    "additionalProperties": False,
}
PEOPLE = ["Alice", "Kenji", "Maria", "Omar", "Chloe", "Liam", "Sofia", "Yuki", "Pierre", "Amara",
          "Lucas", "Hana", "Diego", "Emma", "Noah", "Aiko", "Mateo", "Zara", "Hugo", "Nia"]


def real_model_dir() -> Path:
    return Path(os.environ.get("CHATSTREAM_REAL_MODEL", "~/.cache/chatstream/smollm2-135m-instruct")).expanduser()


@pytest.fixture(scope="module")
def real_generator():
    path = real_model_dir()
    if not (path / "config.json").is_file():
        pytest.skip(f"the real model is absent from {path} (build it with tools/real_model.py, or set "
                    "CHATSTREAM_REAL_MODEL)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    generator = BatchedChatGenerator(model, AutoTokenizer.from_pretrained(path), "cpu", capacity=10)
    yield generator
    generator.close()


def answers(generator, params):
    """The answers to the 20 prompts, ten streams at a time."""
    out = [None] * len(PEOPLE)

    def ask(i):
        prompt = ChatPromptFromTemplate(generator.tokenizer)
        prompt.add_requester_msg(f"Describe a person named {PEOPLE[i]} as JSON with the fields name, age, address "
                                 "(city, country), hobbies (a list) and status.")
        prompt.add_responder_msg(None)
        out[i] = generator.generate_text(prompt, params)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(PEOPLE))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return out


def valid(text):
    try:
        jsonschema.validate(json.loads(text), PERSON)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


@pytest.mark.real_model
def test_twenty_prompts_follow_a_nested_schema_with_the_constraint_and_not_without(real_generator):
    params = GenerationParams(max_new_tokens=200, context_len=2048, temperature=0)
    constrained = answers(real_generator, params.replace(constraint=Constraint.json_schema(PERSON)))
    free = answers(real_generator, params)
    broken = sum(not valid(text) for text in free)
    print(f"\nunconstrained: {broken}/{len(free)} answers break the schema; constrained: "
          f"{sum(not valid(text) for text in constrained)}/{len(constrained)}")
    assert all(valid(text) for text in constrained), [t for t in constrained if not valid(t)]
    assert broken > 0, "the model alone breaks the schema (what the constraint is for)"
