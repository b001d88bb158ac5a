"""The ChatStream 0.3 package path of the prompt presets (they live in chatstream.engine.chat_prompt_presets);
``chat_prompt_rinna`` and ``chat_prompt_redpajama_incite`` are 0.3's module paths, kept as re-exports."""

from ...engine.chat_prompt_presets import (
    PROMPT_PRESETS,
    ChatPromptChatML,
    ChatPromptRinnaJapaneseGPTNeoxInst,
    ChatPromptTogetherRedPajamaINCITEChat,
)

__all__ = ["PROMPT_PRESETS", "ChatPromptChatML", "ChatPromptRinnaJapaneseGPTNeoxInst",
           "ChatPromptTogetherRedPajamaINCITEChat"]
