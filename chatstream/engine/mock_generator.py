"""A generator that needs no model: fixed texts streamed word by word, for UI work and load tests.

``ChatGeneratorMock`` has the interface of ``chatstream.engine.generation.ChatGenerator``
(``.stream(chat_prompt, params=None, should_stop=None) -> Iterator[str]``, blocking), so ChatStream
drives it through the same queue, sessions and worker-thread streaming code as a real model.

``mock_params``: ``type`` is ``"round"`` (a few short answers in turn, the default), ``"long"`` (one
long answer) or ``"echo"`` (the user's input back); ``initial_wait_sec`` is slept before the first word
and ``time_per_token_sec`` before each following one. Each word (with its leading space) is one token.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..exceptions import ConfigurationError, PromptTooLongError
from .chat_prompt import AbstractChatPrompt
from .events import GenerationEvent, check_top_logprobs, events_from_deltas
from .generation import GenerationParams

MOCK_TYPES = ("round", "long", "echo")

ROUND_TEXTS = (
    "Hello! I am a mock assistant. No model is loaded, so every answer you see is a fixed text sent "
    "word by word, the same way a real model streams its tokens.",
    "Streaming lets you read the beginning of an answer while the rest is still being written. "
    "Each chunk the server sends holds the whole answer so far, followed by an end marker.",
    "When many people ask at once, only a few answers are generated at the same time. The others wait "
    "in a short queue, and when the queue is full the server says so at once instead of hanging.",
    "Your conversation is kept on the server in a session, so the next question can build on the "
    "previous answers. Clearing the context starts a new conversation.",
)

LONG_TEXT = " ".join(
    [
        "This is a long mock answer, useful for watching how the page behaves while a response keeps growing.",
        "A language model writes one token at a time: it reads everything written so far, scores every word",
        "it knows, picks one, and repeats. Sampling settings such as temperature, top-k and top-p decide how",
        "adventurous each pick is. A low temperature makes the model cautious and repetitive; a high one makes",
        "it creative and sometimes wrong. Top-k keeps only the k most likely tokens, while top-p keeps the",
        "smallest set whose probabilities add up to p. A repetition penalty lowers the score of tokens that",
        "already appeared, which helps small models avoid loops. The server streams each new piece as soon as",
        "it exists, so the reader never waits for the whole text. If the reader closes the page or presses",
        "stop, the server notices within one step, stops generating, and gives the freed place to the next",
        "request in the queue. That is all this text is for: it is long enough to scroll, to stop halfway,",
        "and to regenerate, without loading a single model weight.",
    ]
)

_WORD = re.compile(r"\s*\S+")
_KNOWN_KEYS = ("type", "initial_wait_sec", "time_per_token_sec")
_SLEEP_SLICE_SEC = 0.05


def _check_seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigurationError(f"mock_params[{name!r}] (={value!r}) must be a number of seconds >= 0.")
    return float(value)


class ChatGeneratorMock:
    """Streams fixed answers; the 0.3 constructor shape ``(model, tokenizer, device, params)`` is kept."""

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        device: Any = None,
        params: dict | None = None,
        *,
        generation_params: GenerationParams | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if params is not None and not isinstance(params, dict):
            raise ConfigurationError(f"`mock_params` (={params!r}) must be a dict such as {{'type': 'round'}}.")
        params = dict(params or {})
        if type in params:  # the 0.3 default was {type: "round"}, keyed by the builtin `type`
            params.setdefault("type", params.pop(type))
        unknown = [k for k in params if k not in _KNOWN_KEYS]
        if unknown:
            raise ConfigurationError(f"unknown mock_params key(s) {unknown}; known ones are {list(_KNOWN_KEYS)}.")
        self.mock_type = params.get("type", "round")
        if self.mock_type not in MOCK_TYPES:
            raise ConfigurationError(f"mock_params['type'] (={self.mock_type!r}) must be one of {MOCK_TYPES}.")
        self.initial_wait_sec = _check_seconds("initial_wait_sec", params.get("initial_wait_sec", 0.0))
        self.time_per_token_sec = _check_seconds("time_per_token_sec", params.get("time_per_token_sec", 0.0))
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.params = generation_params or GenerationParams()
        self._sleep = sleep

    @property
    def runs_inline(self) -> bool:
        """True when it never waits (no ``initial_wait_sec``, no ``time_per_token_sec``): serving then runs it on
        the event loop, with no worker thread (``chatstream.serving._driver``)."""
        return not (self.initial_wait_sec or self.time_per_token_sec)

    def answer_for(self, chat_prompt: AbstractChatPrompt) -> str:
        """The full text this mock answers ``chat_prompt`` with."""
        if self.mock_type == "echo":
            return chat_prompt.get_requester_last_msg() or ""
        if self.mock_type == "long":
            return LONG_TEXT
        return ROUND_TEXTS[(max(chat_prompt.get_turn(), 1) - 1) % len(ROUND_TEXTS)]

    def check_prompt(self, chat_prompt: AbstractChatPrompt, params: GenerationParams | None = None) -> None:
        """Raise PromptTooLongError when the request alone exceeds the context (one character = one token)."""
        params = params or self.params
        request = chat_prompt.get_requester_last_msg() or ""
        if len(request) >= params.context_len:
            raise PromptTooLongError(
                f"the input is {len(request)} characters and the mock counts one token per character; "
                f"context_len is {params.context_len}. Shorten the input or raise context_len."
            )

    def _wait(self, seconds: float, should_stop: Callable[[], bool] | None) -> bool:
        """Sleep ``seconds`` in short slices; True when asked to stop meanwhile."""
        left = seconds
        while left > 0:
            if should_stop is not None and should_stop():
                return True
            step = min(left, _SLEEP_SLICE_SEC)
            self._sleep(step)
            left -= step
        return False

    def stream(
        self,
        chat_prompt: AbstractChatPrompt,
        params: GenerationParams | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[str]:
        """Yield the answer word by word (at most ``params.max_new_tokens`` words)."""
        params = params or self.params
        self.check_prompt(chat_prompt, params)
        words = _WORD.findall(self.answer_for(chat_prompt))[: params.max_new_tokens]
        for index, word in enumerate(words):
            wait = self.initial_wait_sec if index == 0 else self.time_per_token_sec
            if wait and self._wait(wait, should_stop):
                return
            yield word if index else word.lstrip()
            if should_stop is not None and should_stop():
                return

    def events(
        self,
        chat_prompt: AbstractChatPrompt,
        params: GenerationParams | None = None,
        should_stop: Callable[[], bool] | None = None,
        logprobs: int | None = None,
    ) -> Iterator[GenerationEvent]:
        """``stream``'s words as events (token id -1, no logprobs); the prompt counts one token per character."""
        params = params or self.params
        check_top_logprobs(logprobs)
        deltas = self.stream(chat_prompt, params, should_stop)
        return events_from_deltas(deltas, params.max_new_tokens, len(chat_prompt.create_prompt()), should_stop)

    def generate_text(self, chat_prompt: AbstractChatPrompt, params: GenerationParams | None = None) -> str:
        return "".join(self.stream(chat_prompt, params))
