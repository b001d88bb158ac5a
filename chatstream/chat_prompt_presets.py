"""Hand-written prompt formats, for tokenizers without a chat template or to pin a format exactly."""

from __future__ import annotations

from .chat_prompt import AbstractChatPrompt


class ChatPromptChatML(AbstractChatPrompt):
    """ChatML: ``<|im_start|>role\\ncontent<|im_end|>\\n`` (Qwen, the bundled tiny model, many others)."""

    def build_initial_prompt(self, chat_prompt: AbstractChatPrompt | None = None) -> None:
        self.set_requester("user")
        self.set_responder("assistant")

    def create_prompt(self, omit_last_message: bool = False) -> str:
        contents = self.chat_contents[:-1] if omit_last_message else self.chat_contents
        parts = [f"<|im_start|>system\n{self.system}<|im_end|>\n"] if self.system else []
        for content in contents:
            if content.message is None:
                parts.append(f"<|im_start|>{content.role}\n")
            else:
                parts.append(f"<|im_start|>{content.role}\n{content.message}<|im_end|>\n")
        return "".join(parts)

    def get_stop_strs(self) -> list[str]:
        return ["<|im_end|>", "<|im_start|>"]


class ChatPromptTogetherRedPajamaINCITEChat(AbstractChatPrompt):
    """togethercomputer/RedPajama-INCITE-Chat: ``<human>: ...\\n<bot>: ...`` (a ChatStream 0.3 preset)."""

    def build_initial_prompt(self, chat_prompt: AbstractChatPrompt | None = None) -> None:
        self.set_requester("<human>")
        self.set_responder("<bot>")

    def create_prompt(self, omit_last_message: bool = False) -> str:
        contents = self.chat_contents[:-1] if omit_last_message else self.chat_contents
        parts = [self.system] if self.system else []
        for content in contents:
            if content.message is None:
                parts.append(f"{content.role}:")
            else:
                parts.append(f"{content.role}: {content.message}")
        return "\n".join(parts)

    def get_stop_strs(self) -> list[str]:
        return ["<bot>:", "<human>:"]


class ChatPromptRinnaJapaneseGPTNeoxInst(AbstractChatPrompt):
    """rinna/japanese-gpt-neox-3.6b-instruction: ``ユーザー: ...<NL>システム: ...`` (a ChatStream 0.3 preset)."""

    def build_initial_prompt(self, chat_prompt: AbstractChatPrompt | None = None) -> None:
        self.set_requester("ユーザー")
        self.set_responder("システム")

    def create_prompt(self, omit_last_message: bool = False) -> str:
        contents = self.chat_contents[:-1] if omit_last_message else self.chat_contents
        parts = []
        for content in contents:
            if content.message is None:
                parts.append(f"{content.role}: ")
            else:
                parts.append(f"{content.role}: {content.message}")
        return "<NL>".join(parts)

    def get_stop_strs(self) -> list[str]:
        return ["<NL>ユーザー:", "</s>"]

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
