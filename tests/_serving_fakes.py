"""Test doubles for the serving tests: a slow (optionally failing) torch model with a word tokenizer, and
a generator that counts how many generations run at once and holds them until released."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
SPECIALS = ["<unk>", "<eos>", "<|im_start|>", "<|im_end|>"]


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer whose vocabulary is SPECIALS + a few role names + WORDS."""
    vocab = {token: i for i, token in enumerate([*SPECIALS, "user", "assistant", "system", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", eos_token="<eos>")
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return fast


class SlowModel(torch.nn.Module):
    """Answers WORDS in a loop (never EOS), sleeping ``delay`` per forward pass.

    ``fail_at``: the forward pass number (1-based, counted over the model's life) that raises.
    """

    # A stand-in whose "cache" is a step counter: it declares how its decode steps are masked, so the
    # decode probe (which compares cached steps with a whole forward) does not run on it.
    chatstream_decode_mask = True

    def __init__(self, tokenizer: PreTrainedTokenizerFast, delay: float = 0.0, fail_at: int | None = None) -> None:
        super().__init__()
        self.vocab_size = len(tokenizer)
        self.word_ids = [tokenizer.convert_tokens_to_ids(w) for w in WORDS]
        self.delay = delay
        self.fail_at = fail_at
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, past_key_values=None, use_cache=True):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("simulated model failure")
        step = past_key_values or 0
        logits = torch.full((1, input_ids.shape[1], self.vocab_size), -30.0)
        logits[0, -1, self.word_ids[step % len(self.word_ids)]] = 30.0
        return SimpleNamespace(logits=logits, past_key_values=step + 1)


class GatedGenerator:
    """A ``.stream`` double: records each generation's input, counts concurrent runs, and yields
    ``words`` only once ``gate`` is set (or the stop request arrives)."""

    def __init__(self, words: int = 3) -> None:
        self.words = words
        self.gate = threading.Event()
        self.started: list[str | None] = []
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()

    def stream(self, chat_prompt, params=None, should_stop=None):
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.started.append(chat_prompt.get_requester_last_msg())
        try:
            while not self.gate.wait(0.01):
                if should_stop is not None and should_stop():
                    return
            for i in range(self.words):
                yield f" w{i}" if i else "w0"
        finally:
            with self._lock:
                self.active -= 1
