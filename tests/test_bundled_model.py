"""The tiny chat model bundled in fixtures/tiny-chat (built by tools/build_tiny_model.py)."""

from __future__ import annotations

import pytest

from chatstream.bundled import bundled_model_path
from chatstream.engine.chat_prompt import AbstractChatPrompt, ChatPromptFromTemplate
from chatstream.engine.chat_prompt_presets import ChatPromptChatML
from chatstream.engine.detokenizer import REPLACEMENT_CHAR
from chatstream.engine.generation import ChatGenerator, GenerationParams, build_input_ids

SIZE_LIMIT = 10 * 1024 * 1024
GREEDY = GenerationParams(temperature=0, max_new_tokens=40)

CONVERSATIONS = [
    ("", [("Hello", None)]),
    ("You are a helpful assistant.", [("Hello", None)]),
    ("", [("こんにちは", "こんにちは！今日はどんなご用ですか？"), ("猫は好きですか？", None)]),
    ("短く答えてください。", [("Thanks 🐱", "You're welcome! 😊"), ("Bye", None)]),
    ("", [("Hi", "Hello!"), ("What is your name?", "I am Tiny Chat."), ("Weather?", None)]),
]


@pytest.fixture(scope="module")
def bundled():
    """The bundled model and tokenizer, loaded once, offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        path = bundled_model_path()
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    return model, tokenizer


def _fill(prompt: AbstractChatPrompt, system: str, turns: list[tuple[str, str | None]]) -> AbstractChatPrompt:
    prompt.set_system(system)
    for user, answer in turns:
        prompt.add_requester_msg(user)
        prompt.add_responder_msg(answer)
    return prompt


def test_bundled_dir_is_small_and_pickle_free():
    files = [f for f in bundled_model_path().rglob("*") if f.is_file()]
    names = {f.name for f in files}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json", "README.md"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    assert sum(f.stat().st_size for f in files) <= SIZE_LIMIT


def test_special_tokens_and_generation_config(bundled):
    model, tokenizer = bundled
    im_start, im_end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.eos_token_id == im_end == model.generation_config.eos_token_id
    assert tokenizer.pad_token_id is not None
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert len({im_start, im_end, tokenizer.pad_token_id, tokenizer.bos_token_id}) == 4
    assert tokenizer.encode("<|im_start|>user\n", add_special_tokens=False)[0] == im_start


@pytest.mark.parametrize(("system", "turns"), CONVERSATIONS)
def test_chat_template_agrees_with_chatml_preset(bundled, system, turns):
    _, tokenizer = bundled
    preset = _fill(ChatPromptChatML(), system, turns)
    template = _fill(ChatPromptFromTemplate(tokenizer), system, turns)
    assert template.create_prompt() == preset.create_prompt()
    # Each prompt class picks its own add_special_tokens default; the ids must still be the same.
    assert build_input_ids(template, tokenizer, GREEDY) == build_input_ids(preset, tokenizer, GREEDY)


def test_chat_template_renders_closed_conversations_like_chatml(bundled):
    # ChatPromptFromTemplate reads a filled last answer as one to continue, so render a finished
    # conversation (every turn closed by <|im_end|>) with the template directly.
    _, tokenizer = bundled
    turns = [("Thanks 🐱", "You're welcome! 😊"), ("Bye", "Goodbye! 👋")]
    messages = [{"role": "system", "content": "短く答えてください。"}]
    for user, answer in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == _fill(ChatPromptChatML(), "短く答えてください。", turns).create_prompt()
    assert rendered.endswith("Goodbye! 👋<|im_end|>\n")


def test_tokenizer_round_trips_multibyte_text(bundled):
    _, tokenizer = bundled
    text = "Hi 🐱! こんにちは、猫が大好きです。☀️ café"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    assert max(ids) < len(tokenizer)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("Hello", "Hello! How can I help you today?"),
        ("こんにちは", "こんにちは！今日はどんなご用ですか？"),
        ("Thank you", "You're welcome! 😊"),
    ],
)
def test_greedy_reply_streams_the_canned_answer(bundled, question, expected):
    import torch

    model, tokenizer = bundled
    prompt = ChatPromptFromTemplate(tokenizer)
    prompt.add_requester_msg(question)
    prompt.add_responder_msg(None)

    deltas = list(ChatGenerator(model, tokenizer, device="cpu", params=GREEDY).stream(prompt))

    assert "".join(deltas) == expected
    assert len(deltas) > 1
    assert not [d for d in deltas if REPLACEMENT_CHAR in d]
    # transformers' own greedy decoding is the reference for the whole text.
    input_ids, _ = build_input_ids(prompt, tokenizer, GREEDY)
    with torch.inference_mode():
        prompt_ids = torch.tensor([input_ids])
        out = model.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids), do_sample=False,
                             max_new_tokens=40)
    assert tokenizer.decode(out[0, len(input_ids):], skip_special_tokens=True) == "".join(deltas)


def test_emoji_reply_is_split_across_tokens(bundled):
    """The 😊 answer exercises the detokeniser: some of its tokens are not whole UTF-8 characters."""
    _, tokenizer = bundled
    ids = tokenizer.encode("You're welcome! 😊", add_special_tokens=False)
    assert any(REPLACEMENT_CHAR in tokenizer.decode([i]) for i in ids)
