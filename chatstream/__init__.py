"""ChatStream: stream a HuggingFace causal LM's chat answers over FastAPI, and test it with cassettes."""

from .chat_prompt import AbstractChatPrompt, ChatContent, ChatPromptFromTemplate
from .chat_prompt_presets import (
    ChatPromptChatML,
    ChatPromptRinnaJapaneseGPTNeoxInst,
    ChatPromptTogetherRedPajamaINCITEChat,
)
from .detokenizer import StreamingDetokenizer
from .exceptions import (
    CassetteError,
    CassetteFormatError,
    CassetteMiss,
    CassetteNotFound,
    ChatStreamError,
    ConfigurationError,
    PromptTooLongError,
)
from .generation import ChatGenerator, GenerationParams
from .sampling import SamplingParams
from .token_sampler import TokenSampler, TokenSamplerIsok

__version__ = "0.4.0.dev0"

__all__ = [
    "AbstractChatPrompt",
    "CassetteError",
    "CassetteFormatError",
    "CassetteMiss",
    "CassetteNotFound",
    "ChatContent",
    "ChatGenerator",
    "ChatPromptChatML",
    "ChatPromptFromTemplate",
    "ChatPromptRinnaJapaneseGPTNeoxInst",
    "ChatPromptTogetherRedPajamaINCITEChat",
    "ChatStreamError",
    "ConfigurationError",
    "GenerationParams",
    "PromptTooLongError",
    "SamplingParams",
    "StreamingDetokenizer",
    "TokenSampler",
    "TokenSamplerIsok",
    "__version__",
]
