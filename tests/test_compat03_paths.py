"""Every module path of ChatStream 0.3.0 imports (chatstream/compat03's table), and each public name 0.3 defined
there is today's code, or a Removed03Error (an ImportError) that says what replaces it."""

import importlib
import subprocess
import sys

import pytest
import torch

import chatstream
from chatstream.compat03 import PATHS, AliasFinder
from chatstream.exceptions import Removed03Error

# The public names each module of ChatStream 0.3.0 defined (riversun/ChatStream, commit 61df7b6, read with ast).
NAMES_03 = {
    "access_control": [],
    "access_control.client_role_authorizer_for_agent": ["ClientRoleAuthorizerForAgent"],
    "access_control.client_role_authorizer_for_browser": ["ClientRoleAuthorizerForBrowser"],
    "access_control.client_role_finalizer": ["ClientRoleFinalizer"],
    "access_control.client_role_verifier": ["ClientRoleVerifier"],
    "access_control.client_role_wrapper": ["ClientRoleWrapper"],
    "access_control.default_client_role_grant_middleware": ["CHAT_STREAM_CLIENT_ROLE",
                                                            "DefaultClientRoleGrantMiddleware"],
    "access_control.role_def_to_client_role": ["role_def_to_client_role"],
    "chat_core": ["process_chat"],
    "chat_process": ["UPDATE_RESPONDER_TOKEN_ONE_BY_ONE", "condition_for_updated_text",
                     "condition_for_response_text", "ChatGenerator"],
    "chat_process_mock": ["ChatGeneratorMock"],
    "chat_prompt": ["ChatContent", "AbstractChatPrompt"],
    "chat_prompt_presets": [],
    "chat_prompt_presets.chat_prompt_redpajama_incite": ["ChatPromptTogetherRedPajamaINCITEChat"],
    "chat_prompt_presets.chat_prompt_rinna": ["ChatPromptRinnaJapaneseGPTNeoxInst"],
    "chat_stream": ["ChatStream"],
    "chat_stream_api_appender": ["append_apis"],
    "chat_stream_middleware_appender": ["append_middlewares"],
    "data": [],
    "default_api_names": ["DefaultApiNames"],
    "default_api_names_to_path": ["to_web_api_path"],
    "default_finish_token": ["DEFAULT_FINISH_TOKEN"],
    "easy_locale": ["EasyLocale"],
    "merge_dic": ["merge_dict"],
    "mock_response_example_text": ["sample_text_long", "sample_text_array"],
    "request_handler": [],
    "request_handler.request_handler": ["AbstractRequestHandler"],
    "request_handler.simple_session_request_handler": ["SimpleSessionRequestHandler"],
    "resource_usage": ["get_resource_usage"],
    "sampling_utils": ["sampling"],
    "util_create_streaming_response": ["create_streaming_response"],
    "util_ensure_torch_device": ["ensure_torch_device"],
    "util_request_id": ["req_id"],
    "util_resource_file_response": ["_send_resource"],
}
REMOVED = {("chat_core", "process_chat"), ("chat_process", "UPDATE_RESPONDER_TOKEN_ONE_BY_ONE"),
           ("chat_process", "condition_for_updated_text"), ("chat_process", "condition_for_response_text"),
           ("util_create_streaming_response", "create_streaming_response"), ("util_request_id", "req_id"),
           ("util_resource_file_response", "_send_resource")}


def test_the_table_lists_every_03_module_path():
    assert set(NAMES_03) <= set(PATHS)
    assert set(PATHS) - set(NAMES_03) == {"token_sampler"}  # documented after 0.3.0, kept


@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_03_path_is_the_module_beside_it_in_the_table(path):
    module = importlib.import_module(f"chatstream.{path}")
    home = importlib.import_module(PATHS[path])
    assert module is home
    assert module.__name__ == PATHS[path] and module.__spec__.name == PATHS[path]  # its own spec, kept


@pytest.mark.parametrize("path", sorted(NAMES_03))
def test_each_03_name_is_todays_code_or_says_what_replaces_it(path):
    module = importlib.import_module(f"chatstream.{path}")
    for name in NAMES_03[path]:
        if (path, name) in REMOVED:
            with pytest.raises(ImportError, match=rf"chatstream\.{path}\.{name} \(ChatStream 0\.3\) is gone: \w+"):
                exec(f"from chatstream.{path} import {name}", {})
            with pytest.raises(Removed03Error):
                getattr(module, name)
        else:
            value = getattr(module, name)
            origin = getattr(value, "__module__", None) or module.__name__
            assert origin.startswith("chatstream."), (path, name, origin)


def test_an_unknown_name_is_still_an_attribute_error():
    module = importlib.import_module("chatstream.util_request_id")
    assert not hasattr(module, "no_such_name")
    with pytest.raises(ImportError, match="cannot import name"):
        exec("from chatstream.chat_core import no_such_name", {})


def test_the_finder_answers_only_the_table():
    finder = AliasFinder("chatstream", PATHS)
    assert finder.find_spec("chatstream.chat_stream").name == "chatstream.chat_stream"
    for name in ("chatstream.generation", "chatstream.serving.chat_stream", "chat_stream", "chatstream.compat03"):
        assert finder.find_spec(name) is None, name
    assert importlib.util.find_spec("chatstream.not_a_03_path") is None


def test_a_03_path_read_as_an_attribute_imports_it():
    assert chatstream.access_control is importlib.import_module("chatstream.compat03.access_control")


def test_importing_chatstream_imports_no_03_module():
    code = ("import sys, chatstream; print(sorted(m for m in sys.modules if m.startswith('chatstream.compat03') "
            "or m == 'chatstream.chat_stream'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['chatstream.compat03']"


def test_the_03_page_files_are_todays():
    from importlib.resources import files

    assert "<html" in files("chatstream.data").joinpath("index.html").read_text()


def test_finish_token_and_mock_texts_are_todays():
    from chatstream.default_finish_token import DEFAULT_FINISH_TOKEN
    from chatstream.mock_response_example_text import sample_text_array, sample_text_long

    from chatstream.engine.mock_generator import LONG_TEXT, ROUND_TEXTS
    from chatstream.serving._http import FINISH_TOKEN

    assert DEFAULT_FINISH_TOKEN == FINISH_TOKEN == "<::EOS::>"
    assert sample_text_array == list(ROUND_TEXTS) and sample_text_long == LONG_TEXT


def test_sampling_utils_samples_with_todays_sampler():
    from chatstream.sampling_utils import sampling

    logits = torch.tensor([0.0, 5.0, 1.0, 4.9])
    assert sampling(logits.clone(), k=1) == 1
    # the repetition penalty on past tokens moves the top choice (top-k 1 keeps only the best)
    assert sampling(logits.clone(), k=1, past_tokens=[1], penalty=100.0, penalty_method="subtractive") == 3
    torch.manual_seed(0)
    draws = {sampling(logits.clone(), p=0.99, temperature=1.0) for _ in range(50)}
    assert draws <= {1, 3, 2} and {1, 3} <= draws


def test_ensure_torch_device_and_resource_usage():
    from chatstream.resource_usage import get_resource_usage
    from chatstream.util_ensure_torch_device import ensure_torch_device

    from chatstream.exceptions import ConfigurationError

    assert ensure_torch_device(None) is None
    assert ensure_torch_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigurationError):
            ensure_torch_device("cuda")
    usage = get_resource_usage({"num_gpus": 0, "device": "cpu"})
    assert usage["num_gpus"] == 0 and usage["gpus"] == [] and usage["cpu"]["used_memory"] > 0


def test_append_middlewares_takes_03s_argument_order():
    from chatstream.chat_stream_middleware_appender import append_middlewares
    from fastapi import FastAPI

    chat_stream, app = chatstream.ChatStream(), FastAPI()
    append_middlewares(chat_stream, app, None, None, {"develop_mode": True})
    assert [m.cls.__name__ for m in app.user_middleware] == ["CORSMiddleware"]


def test_chat_streams_03_attributes_follow_its_roles():
    chat_stream = chatstream.ChatStream()
    wrapper = chat_stream.client_role_wrapper
    assert type(wrapper).__name__ == "ClientRoleWrapper" and wrapper.roles is chat_stream.client_roles
    assert chat_stream.client_role_verifier.client_role_wrapper is wrapper
    chat_stream.set_client_roles(chatstream.client_role_free_access)
    assert chat_stream.client_role_wrapper is not wrapper
    assert chat_stream.client_role_wrapper.roles is chat_stream.client_roles
    with pytest.raises(AttributeError, match="no_such_attribute"):
        chat_stream.no_such_attribute  # noqa: B018
