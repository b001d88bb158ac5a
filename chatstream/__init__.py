"""ChatStream: stream a HuggingFace causal LM's chat answers over FastAPI, and test it with cassettes.

Names are imported on first use (PEP 562), so ``import chatstream`` (and the pytest plugin, which
every pytest run loads) does not pay for torch and transformers until they are needed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.4.0.dev0"

_EXPORTS: dict[str, str] = {
    "AbstractChatPrompt": "chat_prompt",
    "AbstractRequestHandler": "request_handler",
    "CassetteError": "exceptions",
    "CassetteFormatError": "exceptions",
    "CassetteMiss": "exceptions",
    "CassetteNotFound": "exceptions",
    "ChatContent": "chat_prompt",
    "ChatGenerator": "generation",
    "ChatGeneratorMock": "mock_generator",
    "ChatPromptChatML": "chat_prompt_presets",
    "ChatPromptFromTemplate": "chat_prompt",
    "ChatPromptRinnaJapaneseGPTNeoxInst": "chat_prompt_presets",
    "ChatPromptTogetherRedPajamaINCITEChat": "chat_prompt_presets",
    "ChatStream": "chat_stream",
    "ChatStreamError": "exceptions",
    "ConfigurationError": "exceptions",
    "FinishEvent": "events",
    "FinishReason": "events",
    "GenerationParams": "generation",
    "MemorySessionStore": "sessions",
    "MockCache": "replay",
    "MockModel": "replay",
    "MockTokenSampler": "replay",
    "MockTokenizer": "replay",
    "MockTransformer": "replay",
    "ModelCacheError": "exceptions",
    "ProbeRecorder": "recording",
    "PromptTooLongError": "exceptions",
    "SamplingParams": "sampling",
    "SessionStore": "sessions",
    "SimpleSessionRequestHandler": "request_handler",
    "StreamingDetokenizer": "detokenizer",
    "TokenEvent": "events",
    "TokenSampler": "token_sampler",
    "TokenSamplerIsok": "token_sampler",
    "VerifyResult": "verify",
    "bundled_model_path": "bundled",
    "client_role_chat_page": "client_roles",
    "client_role_default": "client_roles",
    "client_role_free_access": "client_roles",
    "compare_cassettes": "verify",
    "create_app": "app",
    "fingerprint_model_dir": "fingerprint",
    "load_cassette": "cassette",
    "start_probe": "probe",
}

# ChatStream 0.3 exported these names from other packages; they still import, outside __all__.
_FOREIGN_EXPORTS: dict[str, str] = {
    "LoadTime": "loadtime",  # the model-loading progress bar (the `loadtime` package, a dependency as in 0.3)
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _FOREIGN_EXPORTS:
        value = getattr(importlib.import_module(_FOREIGN_EXPORTS[name]), name)
        globals()[name] = value
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chatstream' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_FOREIGN_EXPORTS))

