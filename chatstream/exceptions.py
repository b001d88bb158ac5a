"""Every error ChatStream raises on purpose.

    ChatStreamError
    ├── ConfigurationError (also a ValueError)   bad constructor or CLI argument
    │   ├── ModelTooLargeError                   the weights do not fit the device's free memory
    │   └── ConstraintError                      a schema/grammar that cannot compile, or a token it refuses
    ├── PromptTooLongError (also a ValueError)   the prompt cannot fit the context even alone
    ├── ModelCacheError                          the model did not keep the KV cache it was given
    ├── SessionStoreError                        a session store cannot keep or give back a session
    │   ├── SessionStoreUnavailable              the store cannot be reached now (a 503 with Retry-After)
    │   └── SessionConflictError                 the conversation changed under a turn (another writer)
    ├── CassetteError                            a cassette cannot be read, written or replayed
    │   ├── CassetteNotFound                     no cassette at the expected path
    │   ├── CassetteFormatError                  corrupt, truncated or future-version file
    │   └── CassetteMiss                         a call that was never recorded
    └── Removed03Error (also an ImportError)     a ChatStream 0.3 name with no counterpart today

The messages say what was wrong and what to do about it.
"""

from __future__ import annotations


class ChatStreamError(Exception):
    """Root of all errors raised by chatstream on purpose."""


class ConfigurationError(ChatStreamError, ValueError):
    """An argument has a value that cannot work; the message names it and what to use instead."""


class ModelTooLargeError(ConfigurationError):
    """A model's weights, at the dtype asked for, need more memory than the device has free; checked before loading."""


class PromptTooLongError(ChatStreamError, ValueError):
    """The prompt does not fit into the context even with every older turn dropped."""


class ModelCacheError(ChatStreamError):
    """The model ignored the KV cache the decode loop passed it (a wrong cache argument name)."""


class SessionStoreError(ChatStreamError):
    """A session store cannot keep or give back a session (a value written by a newer version, a bad URL...)."""


class SessionStoreUnavailable(SessionStoreError):
    """The session store cannot be reached now (server down, disk full, file locked); retry later."""


class SessionConflictError(SessionStoreError):
    """The stored conversation changed while a turn ran (another writer committed first); nothing was written."""


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


class Removed03Error(ChatStreamError, ImportError):
    """A ChatStream 0.3 name that has no counterpart today; the message says what replaces it."""
