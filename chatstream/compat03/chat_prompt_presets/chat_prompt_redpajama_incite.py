"""The ChatStream 0.3 module path of the RedPajama-INCITE-Chat preset (a re-export)."""

from ...engine.chat_prompt_presets import ChatPromptTogetherRedPajamaINCITEChat

__all__ = ["ChatPromptTogetherRedPajamaINCITEChat"]
