"""ChatStream: stream a HuggingFace causal LM's chat answers over FastAPI, and test it with cassettes.

The package has three subpackages: ``engine`` (prompts, sampling, the decode loop), ``serving`` (ChatStream
and its HTTP APIs) and ``cassettes`` (record and replay); ``exceptions`` is shared. ChatStream 0.3's module
paths (``chatstream.chat_stream``, ``chatstream.access_control...``) are answered by ``compat03``. Names are imported on
first use (PEP 562), so ``import chatstream`` (and the pytest plugin, which
every pytest run loads) does not pay for torch and transformers until they are needed.
"""

from __future__ import annotations

import importlib
from typing import Any

from .compat03 import PATHS as _PATHS_03
from .compat03 import install as _install_03_paths

_install_03_paths()

__version__ = "0.4.0.dev0"

_EXPORTS: dict[str, str] = {
    "AbstractChatPrompt": "engine.chat_prompt",
    "AbstractRequestHandler": "serving.turn",
    "CassetteError": "exceptions",
    "CassetteFormatError": "exceptions",
    "CassetteMiss": "exceptions",
    "CassetteNotFound": "exceptions",
    "ChatContent": "engine.chat_prompt",
    "ChatGenerator": "engine.generation",
    "ChatGeneratorMock": "engine.mock_generator",
    "ChatPromptChatML": "engine.chat_prompt_presets",
    "ChatPromptFromTemplate": "engine.chat_prompt",
    "ChatPromptRinnaJapaneseGPTNeoxInst": "engine.chat_prompt_presets",
    "ChatPromptTogetherRedPajamaINCITEChat": "engine.chat_prompt_presets",
    "ChatStream": "serving.chat_stream",
    "ChatStreamError": "exceptions",
    "ConfigurationError": "exceptions",
    "FinishEvent": "engine.events",
    "FinishReason": "engine.events",
    "GenerationParams": "engine.generation",
    "MemorySessionStore": "serving.sessions",
    "MockCache": "cassettes.replay",
    "MockModel": "cassettes.replay",
    "MockTokenSampler": "cassettes.replay",
    "MockTokenizer": "cassettes.replay",
    "MockTransformer": "cassettes.replay",
    "ModelCacheError": "exceptions",
    "ModelTooLargeError": "exceptions",
    "ProbeRecorder": "cassettes.recording",
    "PromptTooLongError": "exceptions",
    "SamplingParams": "engine.sampling",
    "SessionConflictError": "exceptions",
    "SessionStore": "serving.sessions",
    "SessionStoreError": "exceptions",
    "SessionStoreUnavailable": "exceptions",
    "SimpleSessionRequestHandler": "serving.turn",
    "StreamingDetokenizer": "engine.detokenizer",
    "TokenEvent": "engine.events",
    "TokenSampler": "engine.token_sampler",
    "TokenSamplerIsok": "engine.token_sampler",
    "VerifyResult": "cassettes.verify",
    "bundled_model_path": "bundled",
    "client_role_chat_page": "serving.client_roles",
    "client_role_default": "serving.client_roles",
    "client_role_free_access": "serving.client_roles",
    "compare_cassettes": "cassettes.verify",
    "create_app": "serving.app",
    "fingerprint_model_dir": "cassettes.fingerprint",
    "load_cassette": "cassettes.cassette",
    "start_probe": "cassettes.probe",
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
    if name in _PATHS_03:  # a 0.3 module path read as an attribute (0.3's __init__ had imported them all)
        return importlib.import_module(f"{__name__}.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chatstream' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_FOREIGN_EXPORTS))

