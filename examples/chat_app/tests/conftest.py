"""The concierge app under test, built from the pytest_chatstream plugin's fixtures.

In a plain ``pytest`` run the model, tokenizer and sampler replay this test's cassette; under
``--probe`` they are the live model's, recorded.
"""

import pytest
from concierge import build_chat_stream, create_app


@pytest.fixture
def chatstream_config():
    return {"seed": 1, "top_k": 1}  # the most likely token each step: answers a reader can check


@pytest.fixture
def chatstream_app(chatstream_model, chatstream_tokenizer, chatstream_token_sampler, chatstream_device,
                   chatstream_config):
    chat_stream = build_chat_stream(chatstream_model, chatstream_tokenizer, chatstream_token_sampler,
                                    chatstream_device, **chatstream_config)
    return create_app(chat_stream, session_secret="concierge-test-secret")
