"""The ChatStream 0.3 module path of the rinna preset (a re-export)."""

from ...engine.chat_prompt_presets import ChatPromptRinnaJapaneseGPTNeoxInst

__all__ = ["ChatPromptRinnaJapaneseGPTNeoxInst"]
