"""The ChatStream 0.3 module path of the RedPajama-INCITE-Chat preset (a re-export)."""

from . import ChatPromptTogetherRedPajamaINCITEChat

__all__ = ["ChatPromptTogetherRedPajamaINCITEChat"]
