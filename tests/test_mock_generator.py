import inspect

import pytest

from chatstream.engine.chat_prompt_presets import ChatPromptChatML
from chatstream.engine.events import FinishReason, generation_events
from chatstream.engine.generation import ChatGenerator, GenerationParams
from chatstream.engine.mock_generator import LONG_TEXT, ROUND_TEXTS, ChatGeneratorMock
from chatstream.exceptions import ConfigurationError, PromptTooLongError


def prompt_with(*requests: str) -> ChatPromptChatML:
    prompt = ChatPromptChatML()
    for i, text in enumerate(requests):
        prompt.add_requester_msg(text)
        prompt.add_responder_msg(None if i == len(requests) - 1 else "ok")
    return prompt


def test_same_stream_interface_as_the_real_generator():
    assert inspect.signature(ChatGeneratorMock.stream) == inspect.signature(ChatGenerator.stream)


def test_round_is_the_default_and_takes_turns():
    mock = ChatGeneratorMock()
    assert mock.mock_type == "round"
    assert mock.generate_text(prompt_with("a")) == ROUND_TEXTS[0]
    assert mock.generate_text(prompt_with("a", "b")) == ROUND_TEXTS[1]
    assert mock.generate_text(prompt_with(*"abcde")) == ROUND_TEXTS[0]


def test_the_03_default_keyed_by_the_builtin_type_still_works():
    assert ChatGeneratorMock(params={type: "long"}).mock_type == "long"


def test_long_and_echo_stream_word_by_word():
    deltas = list(ChatGeneratorMock(params={"type": "echo"}).stream(prompt_with("say  this back")))
    assert deltas == ["say", "  this", " back"]
    long = list(ChatGeneratorMock(params={"type": "long"}).stream(prompt_with("x")))
    assert "".join(long) == LONG_TEXT and len(long) == len(LONG_TEXT.split())


def test_max_new_tokens_limits_the_words():
    mock = ChatGeneratorMock(params={"type": "long"})
    assert len(list(mock.stream(prompt_with("x"), GenerationParams(max_new_tokens=5)))) == 5


def test_waits_are_slept_in_the_calling_thread_and_stop_early():
    slept = []
    mock = ChatGeneratorMock(params={"type": "echo", "initial_wait_sec": 0.12, "time_per_token_sec": 0.01},
                             sleep=slept.append)
    assert list(mock.stream(prompt_with("a b c"))) == ["a", " b", " c"]
    assert sum(slept) == pytest.approx(0.12 + 2 * 0.01)
    assert max(slept) <= 0.05, "long waits are sliced so a stop request is seen quickly"

    slept.clear()
    stop_after = iter([False, False, True])
    stopped = list(mock.stream(prompt_with("a b c"), should_stop=lambda: next(stop_after, True)))
    assert stopped == [] and sum(slept) < 0.12


def test_stop_between_words():
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] >= 2  # consulted after each word

    words = list(ChatGeneratorMock(params={"type": "long"}).stream(prompt_with("x"), should_stop=should_stop))
    assert len(words) == 2


def test_input_longer_than_the_context_is_refused():
    mock = ChatGeneratorMock(params={"type": "echo"})
    with pytest.raises(PromptTooLongError, match="context_len"):
        list(mock.stream(prompt_with("x" * 20), GenerationParams(context_len=20, max_new_tokens=4)))
    mock.check_prompt(prompt_with("x" * 19), GenerationParams(context_len=20, max_new_tokens=4))


@pytest.mark.parametrize(
    ("params", "match"),
    [({"type": "poem"}, "must be one of"), ({"initial_wait_sec": -1}, "seconds"),
     ({"time_per_token_sec": "1"}, "seconds"), ({"speed": 3}, "unknown mock_params")],
)
def test_bad_mock_params(params, match):
    with pytest.raises(ConfigurationError, match=match):
        ChatGeneratorMock(params=params)


def test_events_interface_and_finish_reasons_like_the_real_generator():
    assert inspect.signature(ChatGeneratorMock.events) == inspect.signature(ChatGenerator.events)
    mock = ChatGeneratorMock(params={"type": "echo"})
    prompt = prompt_with("say  this back")
    *tokens, finish = mock.events(prompt)
    assert [t.text for t in tokens] == ["say", "  this", " back"] and {t.token_id for t in tokens} == {-1}
    assert finish.finish_reason is FinishReason.STOP and finish.completion_tokens == 3
    assert finish.prompt_tokens == len(prompt.create_prompt())
    *_, cut = ChatGeneratorMock(params={"type": "long"}).events(prompt_with("x"), GenerationParams(max_new_tokens=4))
    assert cut.finish_reason is FinishReason.LENGTH and cut.completion_tokens == 4
    *_, stopped = mock.events(prompt, should_stop=lambda: True)
    assert stopped.finish_reason is FinishReason.CANCELLED


def test_stream_only_generators_get_events_too():
    class StreamOnly:
        params = GenerationParams(max_new_tokens=2)

        def stream(self, chat_prompt, params=None, should_stop=None):
            yield from ["a", "b"]

    *tokens, finish = generation_events(StreamOnly(), prompt_with("x"))
    assert [t.text for t in tokens] == ["a", "b"] and finish.finish_reason is FinishReason.LENGTH
