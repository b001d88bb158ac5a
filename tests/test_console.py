import io

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatstream.bundled import bundled_model_path
from chatstream.engine.chat_prompt import ChatPromptFromTemplate
from chatstream.engine.generation import ChatGenerator, GenerationParams
from chatstream.serving.console import run_console_chat


@pytest.fixture(scope="module")
def generator():
    path = bundled_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    return ChatGenerator(model, tokenizer, "cpu", GenerationParams(temperature=0, max_new_tokens=40))


def scripted(*lines: str):
    queue = list(lines)

    def read_line(prompt: str) -> str:
        if not queue:
            raise EOFError
        return queue.pop(0)

    return read_line


def test_console_streams_answers_and_keeps_history(generator):
    out = io.StringIO()
    prompt = run_console_chat(generator, lambda: ChatPromptFromTemplate(generator.tokenizer),
                              scripted("Hello", "", "こんにちは"), out)
    assert "bot> Hello! How can I help you today?\n" in out.getvalue()
    assert "bot> こんにちは！今日はどんなご用ですか？\n" in out.getvalue()
    assert prompt.get_turn() == 2
    assert prompt.get_responder_last_msg() == "こんにちは！今日はどんなご用ですか？"


def test_console_clear_and_exit(generator):
    out = io.StringIO()
    prompt = run_console_chat(generator, lambda: ChatPromptFromTemplate(generator.tokenizer),
                              scripted("Hello", "/clear", "/exit", "never read"), out)
    assert "(conversation cleared)" in out.getvalue()
    assert prompt.is_empty()
