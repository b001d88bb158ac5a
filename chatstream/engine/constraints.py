"""Constrained decoding: a JSON schema, a regex or a Lark grammar that every generated answer follows.

``Constraint`` says what the answer must match (a frozen value: ``GenerationParams(constraint=...)``).
``ConstraintCompiler`` (one per tokenizer) compiles each constraint once with llguidance and keeps it;
``start()`` gives a stream its own ``ConstraintState``. The decode loops call ``state.mask(logits)``
before the sampler (tokens the grammar refuses get -inf; an end-of-answer id is allowed only where
the grammar accepts) and ``state.advance(token)`` after it.

llguidance (the library behind vLLM's and llama.cpp's ``guidance`` backends) is used over xgrammar:
a single dependency-free abi3 wheel on CPU (xgrammar pulls triton and apache-tvm-ffi), it compiles a
schema in milliseconds, and it states what a schema uses that it does not support.

The vocabulary comes from the tokenizer's ``convert_ids_to_tokens`` and ``encode`` calls, which probe
mode records and Transformer Mock mode replays: the constraint runs on replay as it did live.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..exceptions import ConfigurationError, ConstraintError

KINDS = ("json_schema", "json_object", "regex", "lark")
# Compact JSON: no free whitespace, so a model cannot loop on blanks between tokens (as vLLM and OpenAI do).
JSON_OPTIONS = {"whitespace_flexible": False}
MAX_COMPILED = 64  # compiled grammars kept per tokenizer (least recently used dropped)


@dataclass(frozen=True)
class Constraint:
    """What an answer must match. ``source``: the schema as canonical JSON, the regex, or the Lark grammar."""

    kind: str
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigurationError(f"constraint kind {self.kind!r} is not one of {', '.join(KINDS)}.")
        if not isinstance(self.source, str):
            raise ConfigurationError(f"the constraint's source must be a str, got {type(self.source).__name__}.")

    @classmethod
    def json_schema(cls, schema: dict | str) -> Constraint:
        """Answers that are JSON documents valid against ``schema`` (a dict or its JSON text)."""
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except ValueError as error:
                raise ConstraintError(f"the JSON schema is not valid JSON ({error}).") from None
        if not isinstance(schema, dict):
            raise ConstraintError(f"a JSON schema must be a JSON object, got {type(schema).__name__}.")
        return cls("json_schema", json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False))

    @classmethod
    def json_object(cls) -> Constraint:
        """Answers that are one JSON object (OpenAI's ``response_format: {"type": "json_object"}``)."""
        return cls("json_object")

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        """Answers that match ``pattern`` as a whole."""
        return cls("regex", pattern)

    @classmethod
    def lark(cls, grammar: str) -> Constraint:
        """Answers in the language of a Lark grammar (llguidance's dialect)."""
        return cls("lark", grammar)

    @property
    def key(self) -> str:
        """A short stable name of the constraint (kind and a digest of its source), as cassettes key samples."""
        digest = hashlib.blake2b(self.source.encode(), digest_size=8).hexdigest()
        return f"{self.kind}:{digest}"

    def grammar(self) -> str:
        """The llguidance grammar of this constraint (raises ConstraintError for a malformed schema)."""
        import llguidance

        try:
            if self.kind == "json_schema":
                return llguidance.LLMatcher.grammar_from_json_schema(self.source, defaults=JSON_OPTIONS)
            if self.kind == "json_object":
                return llguidance.LLMatcher.grammar_from_json_schema({"type": "object"}, defaults=JSON_OPTIONS)
            if self.kind == "regex":
                return llguidance.LLMatcher.grammar_from_regex(self.source)
            return llguidance.LLMatcher.grammar_from_lark(self.source)
        except ValueError as error:
            raise ConstraintError(f"the {self.kind} constraint cannot be compiled: {error}") from None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "source": self.source}

    @classmethod
    def from_dict(cls, data: dict) -> Constraint:
        if not isinstance(data, dict) or set(data) - {"kind", "source"} or "kind" not in data:
            raise ConfigurationError(f"a constraint dict has `kind` and `source`, got {data!r:.80}.")
        return cls(data["kind"], data.get("source", ""))


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the printable character standing for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def token_bytes(names: list[str | None]) -> list[bytes]:
    """The bytes each token stands for, from ``convert_ids_to_tokens``: SentencePiece vocabularies (``▁`` for
    a space, ``<0xNN>`` byte fallback; Llama 2, Mistral) or byte-level BPE (GPT-2, Llama 3, SmolLM, Qwen)."""
    decoder = _byte_decoder()
    sentencepiece = any("\u2581" in name for name in names if name)
    out = []
    for name in names:
        name = name or ""
        if sentencepiece and len(name) == 6 and name.startswith("<0x") and name.endswith(">"):
            out.append(bytes([int(name[3:5], 16)]))
        elif sentencepiece or not all(ch in decoder for ch in name):
            out.append(name.replace("\u2581", " ").encode())
        else:
            out.append(bytes(decoder[ch] for ch in name))
    return out


class _Vocabulary:
    """What llguidance's TokenizerWrapper reads from a tokenizer."""

    def __init__(self, tokenizer: Any, eos_id: int) -> None:
        size = len(tokenizer)
        self.tokens = token_bytes(tokenizer.convert_ids_to_tokens(list(range(size))))
        self.special_token_ids = sorted(int(i) for i in (getattr(tokenizer, "all_special_ids", None) or []))
        self.eos_token_id = eos_id
        self.bos_token_id = getattr(tokenizer, "bos_token_id", None)
        self._tokenizer = tokenizer

    def __call__(self, text: str | bytes) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return list(self._tokenizer.encode(text, add_special_tokens=False))


class ConstraintState:
    """One stream's grammar state: ``mask`` the next logits, ``advance`` by the sampled token."""

    def __init__(self, matcher: Any, eos_ids: set[int], constraint: Constraint) -> None:
        self.matcher = matcher
        self.eos_ids = sorted(eos_ids)
        self.constraint = constraint
        self._allowed: torch.Tensor | None = None

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` ``(1, vocab)`` with every token the grammar refuses at -inf (a new tensor); an EOS id is
        allowed only where the grammar accepts the answer so far."""
        vocab = logits.shape[-1]
        bits = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        allowed = np.zeros(vocab, dtype=bool)
        unpacked = np.unpackbits(bits, bitorder="little")[:vocab].astype(bool)
        allowed[: unpacked.shape[0]] = unpacked
        accepting = self.matcher.is_accepting()
        for eos in self.eos_ids:
            if eos < vocab:
                allowed[eos] = accepting
        if not allowed.any():
            error = self.matcher.get_error() if self.matcher.is_error() else "no token can continue the answer"
            raise ConstraintError(f"the {self.constraint.kind} constraint left no token to sample: {error}.")
        keep = torch.from_numpy(allowed).to(logits.device)
        return logits.masked_fill(~keep, float("-inf"))

    def advance(self, token: int) -> None:
        """Feed the sampled ``token`` (an EOS ends the stream and is not fed); a token the grammar refuses
        raises ConstraintError (a replayed token that the constraint would not have allowed live)."""
        if token in self.eos_ids:
            return
        if not self.matcher.consume_token(token):
            raise ConstraintError(f"token {token} breaks the {self.constraint.kind} constraint "
                                  f"({self.matcher.get_error()}); was the cassette recorded with another one?")


class ConstraintCompiler:
    """Compiles constraints for one tokenizer, each once (kept, least recently used dropped past 64)."""

    def __init__(self, tokenizer: Any, eos_id: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.eos_id = eos_id if eos_id is not None else getattr(tokenizer, "eos_token_id", None) or 0
        self._lock = threading.Lock()
        self._lltokenizer: Any = None
        self._compiled: OrderedDict[Constraint, Any] = OrderedDict()

    def _ll(self) -> Any:
        if self._lltokenizer is None:
            import llguidance

            self._lltokenizer = llguidance.LLTokenizer(
                llguidance.TokenizerWrapper(_Vocabulary(self.tokenizer, self.eos_id)))
        return self._lltokenizer

    def compile(self, constraint: Constraint) -> Any:
        """The constraint's matcher in its start state (compiled on first use); ConstraintError, naming what
        is unsupported, for one llguidance cannot compile."""
        import llguidance

        with self._lock:
            matcher = self._compiled.get(constraint)
            if matcher is not None:
                self._compiled.move_to_end(constraint)
                return matcher
            grammar = constraint.grammar()
            tokenizer = self._ll()
            is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
            if is_error:
                raise ConstraintError(f"the {constraint.kind} constraint cannot be compiled: {messages[0]}")
            matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
            if matcher.is_error():
                raise ConstraintError(f"the {constraint.kind} constraint cannot be compiled: {matcher.get_error()}")
            self._compiled[constraint] = matcher
            while len(self._compiled) > MAX_COMPILED:
                self._compiled.popitem(last=False)
            return matcher

    def start(self, constraint: Constraint, eos_ids: set[int]) -> ConstraintState:
        """A new stream's state for ``constraint`` (a copy of the compiled matcher)."""
        return ConstraintState(self.compile(constraint).deep_copy(), eos_ids, constraint)


def compiler_of(generator: Any) -> ConstraintCompiler:
    """``generator``'s ConstraintCompiler, made on first use (one per generator and its tokenizer)."""
    compiler = generator.__dict__.get("_constraint_compiler")
    if compiler is None:
        compiler = generator.__dict__.setdefault("_constraint_compiler", ConstraintCompiler(generator.tokenizer))
    return compiler


def check_constraint(generator: Any, constraint: Constraint | None) -> None:
    """Compile ``constraint`` for ``generator`` now (blocking), so a bad one is refused before admission;
    a generator without a tokenizer (the mock) cannot honour one: ConstraintError."""
    if constraint is None:
        return
    if getattr(generator, "tokenizer", None) is None:
        raise ConstraintError("this generator has no tokenizer, so it cannot constrain its answers; serve a model.")
    compiler_of(generator).compile(constraint)
