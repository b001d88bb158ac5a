"""Hand-written prompt formats, for tokenizers without a chat template or to pin a format exactly.

The two ChatStream 0.3 presets produce 0.3's text byte for byte (checked by 0.3's own tests in
``tests/test_compat03_prompts_*.py``), with one fix each, noted where it is made and in CHANGELOG.md.
``chatstream.chat_prompt_presets.chat_prompt_rinna`` and ``.chat_prompt_redpajama_incite`` are
0.3's module paths, kept as re-exports.
"""

from __future__ import annotations

from .chat_prompt import AbstractChatPrompt, ChatContent


def _open_turn(content: ChatContent) -> bool:
    # 0.3 tested `if message:`, so an empty message ("") was drawn as an open turn in the middle of the
    # history ("<human>:<bot>: ..."); only None (not generated yet) is an open turn here.
    return content.message is None


class ChatPromptChatML(AbstractChatPrompt):
    """ChatML: ``<|im_start|>role\\ncontent<|im_end|>\\n`` (Qwen, the bundled tiny model, many others)."""

    def __init__(self) -> None:
        super().__init__()
        self.set_requester("user")
        self.set_responder("assistant")

    def create_prompt(self, opts: dict | bool | None = None) -> str:
        parts = [f"<|im_start|>system\n{self.system}<|im_end|>\n"] if self.system else []
        for content in self.get_contents(opts):
            if _open_turn(content):
                parts.append(f"<|im_start|>{content.role}\n")
            else:
                parts.append(f"<|im_start|>{content.role}\n{content.message}<|im_end|>\n")
        return "".join(parts)

    def get_stop_strs(self) -> list[str]:
        return ["<|im_end|>", "<|im_start|>"]


class ChatPromptTogetherRedPajamaINCITEChat(AbstractChatPrompt):
    """togethercomputer/RedPajama-INCITE-Chat: ``<human>: ...\\n<bot>: ...\\n`` (the ChatStream 0.3 preset).

    The system text goes first with nothing added; each finished message ends with ``\\n``; the open
    answer is ``<bot>:``. Without chat mode the prompt is the last request alone (0.3).
    """

    def __init__(self) -> None:
        super().__init__()
        self.set_requester("<human>")
        self.set_responder("<bot>")

    def create_prompt(self, opts: dict | bool | None = None) -> str:
        if not self.chat_mode:
            return self.get_requester_last_msg()
        text = self.system
        for content in self.get_contents(opts):
            if not content.role:
                continue
            text += f"{content.role}:" if _open_turn(content) else f"{content.role}: {content.message}\n"
        return text

    def get_stop_strs(self) -> list[str] | None:
        if not self.chat_mode:
            return None
        # "\n<" stops the model when it goes on to write the next "<human>:" turn itself (0.3)
        return ["<|endoftext|>", "\n<"]


class ChatPromptRinnaJapaneseGPTNeoxInst(AbstractChatPrompt):
    """rinna/japanese-gpt-neox-3.6b-instruction-sft/-ppo: ``ユーザー: ...<NL>システム: ...<NL>`` (the 0.3 preset).

    The system text goes first with nothing added; each finished message ends with ``<NL>``; the open
    answer is ``システム: ``. Newlines in requests become ``<NL>`` and ``<NL>`` in answers becomes a
    newline. No stop strings: the model ends its answer with its EOS token (``</s>``), which the decode
    loop stops on (0.3 returned ``[]`` too).
    """

    def __init__(self) -> None:
        super().__init__()
        self.set_requester("ユーザー")
        self.set_responder("システム")

    def create_prompt(self, opts: dict | bool | None = None) -> str:
        if not self.chat_mode:
            return self.get_requester_last_msg()
        text = self.system
        for content in self.get_contents(opts):
            if not content.role:
                continue
            text += f"{content.role}: " if _open_turn(content) else f"{content.role}: {content.message}<NL>"
        return text

    def get_stop_strs(self) -> list[str] | None:
        if not self.chat_mode:
            return None
        return []

    def get_replacement_when_input(self) -> list[tuple[str, str]]:
        return [("\n", "<NL>")]

    def get_replacement_when_output(self) -> list[tuple[str, str]]:
        return [("<NL>", "\n")]


PROMPT_PRESETS: dict[str, type[AbstractChatPrompt]] = {
    "chatml": ChatPromptChatML,
    "redpajama": ChatPromptTogetherRedPajamaINCITEChat,
    "rinna": ChatPromptRinnaJapaneseGPTNeoxInst,
}
"""Hand-written prompt formats by the name ``chatstream serve --prompt-preset`` takes, for models
without a ``chat_template`` ("template", the default, uses the tokenizer's own)."""
