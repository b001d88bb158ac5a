"""How a causal LM takes and returns its KV cache, whatever the transformers version.

transformers 5.24 renamed the forward argument ``past_key_values`` to ``cache`` (outputs carry a
``cache`` field). The old name still works there with a ``FutureWarning``, while on 5.23 and older a
``cache=`` keyword is swallowed by ``**kwargs`` and silently ignored: no error, an empty cache, wrong
tokens. So the name is read from the signature of the model's own ``forward``, never guessed from
the installed version, and the decode loop checks once that the model really kept the cache it was
given (``check_cache_kept``).
"""

from __future__ import annotations

import inspect
from typing import Any

from ..exceptions import ConfigurationError, ModelCacheError

CACHE_ARGUMENTS = ("cache", "past_key_values")
"""The forward keywords that take a KV cache, newest first."""

_STATE_SPACE_ARGUMENTS = ("cache_params",)


def cache_argument(model: Any) -> str:
    """The keyword ``model``'s forward takes its KV cache under: ``"cache"`` or ``"past_key_values"``.

    A forward whose signature cannot be read (or only takes ``**kwargs``) gets ``"past_key_values"``,
    the name every transformers release before 5.24 used. A model that takes a state-space cache
    (``cache_params``) instead is refused: the decode loop resumes from a KV cache.
    """
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return "past_key_values"
    for name in CACHE_ARGUMENTS:
        if name in parameters:
            return name
    for name in _STATE_SPACE_ARGUMENTS:
        if name in parameters:
            raise ConfigurationError(
                f"{type(model).__name__}.forward takes its cache as `{name}` (a state-space model's state), "
                "which this transformers version does not expose through the KV-cache API ChatStream's decode "
                "loop uses; upgrade transformers to >= 5.24 (where it takes `cache`) or serve a transformer model."
            )
    return "past_key_values"


def output_cache(output: Any) -> Any:
    """The cache a forward returned: ``output.cache`` (transformers >= 5.24) or ``output.past_key_values``.

    Reads the field the output class declares, so transformers' deprecated alias (which logs a
    warning on every first use) is never touched.
    """
    fields = getattr(type(output), "__dataclass_fields__", None)
    if fields is not None:
        for name in CACHE_ARGUMENTS:
            if name in fields:
                return getattr(output, name)
        return None
    for name in CACHE_ARGUMENTS:
        value = getattr(output, name, None)
        if value is not None:
            return value
    return None


def cache_kwargs(kwargs: dict) -> Any:
    """The cache passed in a forward's keyword arguments, under either name (None when none was)."""
    cache = kwargs.get("cache")
    return cache if cache is not None else kwargs.get("past_key_values")


def cache_length(cache: Any) -> int | None:
    """How many positions ``cache`` holds, or None where it cannot say (state-space caches, plain objects)."""
    get_seq_length = getattr(cache, "get_seq_length", None)
    if get_seq_length is None:
        return None
    try:
        return int(get_seq_length())
    except (TypeError, ValueError, AttributeError, NotImplementedError):
        return None


def check_cache_kept(model: Any, argument: str, cache: Any, expected_length: int) -> None:
    """Raise ``ModelCacheError`` if ``cache`` does not hold ``expected_length`` positions after a decode step.

    A model that ignored the cache it was given (a ``cache=`` keyword on transformers <= 5.23) returns a
    fresh cache of one position; without this check it would generate from that one token alone.
    """
    length = cache_length(cache)
    if length is not None and length != expected_length:
        raise ModelCacheError(
            f"{type(model).__name__} ignored the KV cache passed as `{argument}=`: after a decode step its cache "
            f"holds {length} positions, not {expected_length}. Its forward names `{argument}` but does not use "
            "it; pass a model whose forward takes `cache` (transformers >= 5.24) or `past_key_values`."
        )
