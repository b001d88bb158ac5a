import json

import pytest
from transformers import AutoTokenizer

from chatstream.bundled import bundled_model_path
from chatstream.engine.chat_prompt import AbstractChatPrompt, ChatPromptFromTemplate
from chatstream.engine.chat_prompt_presets import (
    ChatPromptChatML,
    ChatPromptRinnaJapaneseGPTNeoxInst,
    ChatPromptTogetherRedPajamaINCITEChat,
)
from chatstream.exceptions import ConfigurationError


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(bundled_model_path())


def conversation(prompt: AbstractChatPrompt) -> AbstractChatPrompt:
    prompt.set_system("You are kind.")
    prompt.add_requester_msg("Hello")
    prompt.add_responder_msg("Hi there!")
    prompt.add_requester_msg("こんにちは")
    prompt.add_responder_msg(None)
    return prompt


def test_chatml_preset_builds_open_turn():
    prompt = conversation(ChatPromptChatML())
    assert prompt.create_prompt() == (
        "<|im_start|>system\nYou are kind.<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n"
        "<|im_start|>assistant\nHi there!<|im_end|>\n"
        "<|im_start|>user\nこんにちは<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert prompt.get_requester_last_msg() == "こんにちは"
    assert "<|im_end|>" in prompt.get_stop_strs()


def test_template_preset_matches_hand_written_chatml(tokenizer):
    assert conversation(ChatPromptFromTemplate(tokenizer)).create_prompt() == conversation(
        ChatPromptChatML()
    ).create_prompt()


def test_template_preset_needs_a_tokenizer_with_template():
    with pytest.raises(ConfigurationError, match="needs the tokenizer"):
        ChatPromptFromTemplate()

    class NoTemplate:
        chat_template = None

    with pytest.raises(ConfigurationError, match="no `chat_template`"):
        ChatPromptFromTemplate(NoTemplate())


def test_turn_bookkeeping():
    prompt = ChatPromptChatML()
    assert prompt.is_empty()
    conversation(prompt)
    assert not prompt.is_empty()
    assert prompt.get_turn() == 2
    prompt.set_responder_last_msg("やあ")
    assert prompt.get_responder_last_msg() == "やあ"
    prompt.clear_last_responder_message()
    assert prompt.get_responder_last_msg() is None
    assert prompt.create_prompt().endswith("<|im_start|>assistant\n")


def test_drop_oldest_turn_keeps_system_and_last_request():
    prompt = conversation(ChatPromptChatML())
    assert prompt.drop_oldest_turn()
    assert [c.message for c in prompt.chat_contents] == ["こんにちは", None]
    assert prompt.system == "You are kind."
    assert not prompt.drop_oldest_turn()


def test_round_trips_through_json(tokenizer):
    for prompt in (conversation(ChatPromptChatML()), conversation(ChatPromptFromTemplate(tokenizer))):
        data = json.loads(json.dumps(prompt.to_dict()))
        kwargs = {"tokenizer": tokenizer} if isinstance(prompt, ChatPromptFromTemplate) else {}
        restored = type(prompt).from_dict(data, **kwargs)
        assert restored.create_prompt() == prompt.create_prompt()
        assert restored.to_dict() == prompt.to_dict()


def test_from_dict_refuses_newer_format():
    data = conversation(ChatPromptChatML()).to_dict() | {"format_version": 99}
    with pytest.raises(ValueError, match="upgrade chatstream"):
        ChatPromptChatML.from_dict(data)


def test_copy_is_independent(tokenizer):
    prompt = conversation(ChatPromptFromTemplate(tokenizer))
    clone = prompt.copy()
    clone.drop_oldest_turn()
    clone.set_responder_last_msg("x")
    assert prompt.get_turn() == 2
    assert prompt.get_responder_last_msg() is None


def test_legacy_presets():
    red = conversation(ChatPromptTogetherRedPajamaINCITEChat())
    assert red.create_prompt().endswith("<human>: こんにちは\n<bot>:")
    rinna = ChatPromptRinnaJapaneseGPTNeoxInst()
    rinna.add_requester_msg("一行目\n二行目")
    rinna.add_responder_msg(None)
    assert rinna.create_prompt() == "ユーザー: 一行目<NL>二行目<NL>システム: "
