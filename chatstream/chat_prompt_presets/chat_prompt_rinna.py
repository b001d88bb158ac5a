"""The ChatStream 0.3 module path of the rinna preset (a re-export)."""

from . import ChatPromptRinnaJapaneseGPTNeoxInst

__all__ = ["ChatPromptRinnaJapaneseGPTNeoxInst"]
