"""Every error ChatStream raises on purpose.

    ChatStreamError
    ├── ConfigurationError (also a ValueError)   bad constructor or CLI argument
    ├── PromptTooLongError (also a ValueError)   the prompt cannot fit the context even alone
    ├── ModelCacheError                          the model did not keep the KV cache it was given
    └── CassetteError                            a cassette cannot be read, written or replayed
        ├── CassetteNotFound                     no cassette at the expected path
        ├── CassetteFormatError                  corrupt, truncated or future-version file
        └── CassetteMiss                         a call that was never recorded

The messages say what was wrong and what to do about it.
"""

from __future__ import annotations


class ChatStreamError(Exception):
    """Root of all errors raised by chatstream on purpose."""


class ConfigurationError(ChatStreamError, ValueError):
    """An argument has a value that cannot work; the message names it and what to use instead."""


class PromptTooLongError(ChatStreamError, ValueError):
    """The prompt does not fit into the context even with every older turn dropped."""


class ModelCacheError(ChatStreamError):
    """The model ignored the KV cache the decode loop passed it (a wrong cache argument name)."""


class CassetteError(ChatStreamError):
    """A cassette cannot be read, written or replayed."""


class CassetteNotFound(CassetteError):
    """No cassette exists where one was expected."""


class CassetteFormatError(CassetteError):
    """A cassette file is corrupt, truncated or written by a newer format version."""


class CassetteMiss(CassetteError):
    """The replayed code made a call that the cassette never recorded."""


class ConstraintError(ConfigurationError):
    """A decoding constraint (JSON schema, regex, grammar) that the grammar library cannot compile, or a
    token that breaks it (a replayed cassette whose recorded token the grammar refuses)."""
