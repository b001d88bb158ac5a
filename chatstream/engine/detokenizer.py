"""Incremental detokenisation that is UTF-8 safe, O(n) over a response and holds back stop strings.

Each new token is decoded together with the few tokens before it (the prefix/read-offset rule of
TGI and vLLM): text is emitted only once the window decodes without a trailing U+FFFD, so a
multi-byte character split across byte-level tokens is never shown half-way. The cost per token is
a decode of a short window, not of the whole response.

On top of that, the tail of the text that could still grow into a stop string is held back, so a
stop string never reaches the client and then disappears.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REPLACEMENT_CHAR = "\ufffd"


class StreamingDetokenizer:
    """Turns generated token ids into text deltas.

    ``push(token_id)`` returns the text that is now safe to show (possibly ""); ``finish()`` returns
    what was still held back. After a stop string is found, ``stopped`` is True and the text is cut
    just before it.
    """

    def __init__(
        self,
        tokenizer: Any,
        stop_strs: Sequence[str] = (),
        skip_special_tokens: bool = True,
        context_ids: Sequence[int] = (),
    ) -> None:
        self._tokenizer = tokenizer
        self._stop_strs = tuple(s for s in stop_strs if s)
        self._longest_stop = max(map(len, self._stop_strs), default=0)
        self._skip_special_tokens = skip_special_tokens
        # A few prompt tokens before the response let tokenizers that drop a leading space
        # (SentencePiece) decode the first response token as it will appear mid-text.
        self._ids: list[int] = list(context_ids)[-4:]
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        self._text = ""  # every character decoded so far
        self._emitted = 0  # how many characters of _text were handed out
        self.stopped = False

    @property
    def text(self) -> str:
        """The text handed out so far."""
        return self._text[: self._emitted]

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(
            ids, skip_special_tokens=self._skip_special_tokens, clean_up_tokenization_spaces=False
        )

    def push(self, token_id: int) -> str:
        if self.stopped:
            return ""
        self._ids.append(int(token_id))
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) <= len(prefix_text) or new_text.endswith(REPLACEMENT_CHAR):
            return ""  # an incomplete UTF-8 sequence, or a token that adds no text yet
        self._text += new_text[len(prefix_text) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return self._release(final=False)

    def finish(self) -> str:
        """Hand out whatever is left; call once the loop ends (EOS or token limit)."""
        if self.stopped:
            return ""
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        end = len(self._text)
        if self._stop_strs:
            search_from = max(0, self._emitted - self._longest_stop + 1)
            hits = [i for s in self._stop_strs if (i := self._text.find(s, search_from)) != -1]
            if hits:
                end = min(hits)
                self.stopped = True
            elif not final:
                end -= self._held_tail_len()
        delta = self._text[self._emitted : end]
        self._emitted = max(self._emitted, end)
        return delta

    def _held_tail_len(self) -> int:
        """Length of the longest suffix of the text that is a proper prefix of some stop string."""
        text = self._text
        start = max(self._emitted, len(text) - self._longest_stop + 1)
        held = 0
        for stop in self._stop_strs:
            # Only a suffix that starts with the stop string's first character can begin it.
            at = text.find(stop[0], start)
            while at != -1 and len(text) - at > held:
                if stop.startswith(text[at:]):
                    held = len(text) - at
                    break
                at = text.find(stop[0], at + 1)
        return held
