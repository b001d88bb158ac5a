"""The home of ChatStream 0.3's module paths.

``PATHS`` lists every module path ChatStream 0.3.0 had (and ``chatstream.token_sampler``, documented since),
next to the module that holds today's code for it. ``install()`` (run by ``import chatstream``) puts a module
finder first on ``sys.meta_path`` that answers exactly these names: importing ``chatstream.<0.3 path>`` gives
the module named beside it, the same module object (``chatstream.chat_stream is chatstream.serving.chat_stream``).
Nothing is imported before it is asked for.

The modules in this folder are 0.3's names over today's code, never the reverse: serving, the engine and the
cassettes never import them (tests/test_import_graph.py). A 0.3 name with no counterpart today raises
``chatstream.exceptions.Removed03Error`` (an ImportError) saying what replaces it. docs/migration-0.3.md
tells what differs.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

_HOME = "chatstream.compat03"

# 0.3 path (below chatstream.) -> the module holding today's code
PATHS: dict[str, str] = {
    # the chat facade, prompts and sampler: today's modules themselves
    "chat_stream": "chatstream.serving.chat_stream",
    "chat_prompt": "chatstream.engine.chat_prompt",
    "token_sampler": "chatstream.engine.token_sampler",
    "chat_process_mock": "chatstream.engine.mock_generator",
    "data": "chatstream.web",  # 0.3's package of the chat page's files
    # 0.3's names over today's code, in this folder
    "access_control": f"{_HOME}.access_control",
    "access_control.client_role_authorizer_for_agent": f"{_HOME}.access_control.client_role_authorizer_for_agent",
    "access_control.client_role_authorizer_for_browser": f"{_HOME}.access_control.client_role_authorizer_for_browser",
    "access_control.client_role_finalizer": f"{_HOME}.access_control.client_role_finalizer",
    "access_control.client_role_verifier": f"{_HOME}.access_control.client_role_verifier",
    "access_control.client_role_wrapper": f"{_HOME}.access_control.client_role_wrapper",
    "access_control.default_client_role_grant_middleware":
        f"{_HOME}.access_control.default_client_role_grant_middleware",
    "access_control.role_def_to_client_role": f"{_HOME}.access_control.role_def_to_client_role",
    "chat_prompt_presets": f"{_HOME}.chat_prompt_presets",
    "chat_prompt_presets.chat_prompt_redpajama_incite": f"{_HOME}.chat_prompt_presets.chat_prompt_redpajama_incite",
    "chat_prompt_presets.chat_prompt_rinna": f"{_HOME}.chat_prompt_presets.chat_prompt_rinna",
    "request_handler": f"{_HOME}.request_handler",
    "request_handler.request_handler": f"{_HOME}.request_handler.request_handler",
    "request_handler.simple_session_request_handler": f"{_HOME}.request_handler.simple_session_request_handler",
    "default_api_names": f"{_HOME}.default_api_names",
    "default_api_names_to_path": f"{_HOME}.default_api_names_to_path",
    "easy_locale": f"{_HOME}.easy_locale",
    "merge_dic": f"{_HOME}.merge_dic",
    "chat_core": f"{_HOME}.chat_core",
    "chat_process": f"{_HOME}.chat_process",
    "chat_stream_api_appender": f"{_HOME}.chat_stream_api_appender",
    "chat_stream_middleware_appender": f"{_HOME}.chat_stream_middleware_appender",
    "default_finish_token": f"{_HOME}.default_finish_token",
    "mock_response_example_text": f"{_HOME}.mock_response_example_text",
    "resource_usage": f"{_HOME}.resource_usage",
    "sampling_utils": f"{_HOME}.sampling_utils",
    "util_create_streaming_response": f"{_HOME}.util_create_streaming_response",
    "util_ensure_torch_device": f"{_HOME}.util_ensure_torch_device",
    "util_request_id": f"{_HOME}.util_request_id",
    "util_resource_file_response": f"{_HOME}.util_resource_file_response",
}

# ChatStream 0.3's attributes of a ChatStream, made on first use (see chatstream.serving.extra_attributes)
CHAT_STREAM_ATTRIBUTES: dict[str, str] = {
    "client_role_wrapper": f"{_HOME}.access_control.client_role_wrapper:for_chat_stream",
    "client_role_verifier": f"{_HOME}.access_control.client_role_verifier:ClientRoleVerifier",
}


class AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers ``chatstream.<0.3 path>`` with the module ``PATHS`` names (imported then), and nothing else."""

    def __init__(self, package: str, paths: dict[str, str]) -> None:
        self.targets = {f"{package}.{path}": target for path, target in paths.items()}
        self._own_specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.targets:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.targets[spec.name])
        self._own_specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # Nothing to run (the module was imported once, under its own name); importlib has just set the alias's
        # spec on it, so give it back its own: the 0.3 path is another name for the same object.
        module.__spec__ = self._own_specs.pop(module.__name__)


def install(package: str = "chatstream") -> None:
    """Answer 0.3's module paths below ``package`` (once per process) and register 0.3's ChatStream attributes."""
    from ..serving import extra_attributes

    for name, factory in CHAT_STREAM_ATTRIBUTES.items():
        extra_attributes.register(name, factory)
    if not any(isinstance(finder, AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, AliasFinder(package, PATHS))


__all__ = ["CHAT_STREAM_ATTRIBUTES", "PATHS", "AliasFinder", "install"]
