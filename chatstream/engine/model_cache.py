"""How a causal LM takes and returns its KV cache, whatever the transformers version.

transformers 5.24 renamed the forward argument ``past_key_values`` to ``cache`` (outputs carry a
``cache`` field). The old name still works there with a ``FutureWarning``, while on 5.23 and older a
``cache=`` keyword is swallowed by ``**kwargs`` and silently ignored: no error, an empty cache, wrong
tokens. So the name is read from the signature of the model's own ``forward``, never guessed from
the installed version, and the decode loop checks once, by behaviour, that the model resumes from the cache it
was given (``decode_attention_mask``).
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from typing import Any

import torch

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
    """How many positions ``cache`` reports (``get_seq_length``), or None where it cannot say. What the count
    means varies with the kind of cache and the transformers release (5.25's linear-attention layers count
    every state update): use it as a label, never to judge whether a model kept its cache."""
    get_seq_length = getattr(cache, "get_seq_length", None)
    if get_seq_length is None:
        return None
    try:
        return int(get_seq_length())
    except (TypeError, ValueError, AttributeError, NotImplementedError):
        return None


def _vocab_size(model: Any) -> int:
    embeddings = getattr(model, "get_input_embeddings", None)
    try:
        return int(embeddings().num_embeddings)
    except Exception:  # no embedding module to read: the config says
        return int(getattr(getattr(model, "config", None), "vocab_size", 0) or 2)


def _device_of(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device(getattr(model, "device", "cpu"))


# How far a decode step's logits may stray from a whole forward's over the same tokens (rtol, atol) per dtype:
# a split prefill rounds differently, a model that lost its state is off by the whole context's influence.
_RESUME_TOLERANCES = {torch.float32: (1e-3, 1e-3), torch.float64: (1e-6, 1e-6),
                      torch.float16: (5e-2, 5e-2), torch.bfloat16: (1e-1, 1e-1)}
_PROBE_LENGTH = 8
_PROBE_STEPS = 3  # decode steps: transformers 5.24's mamba went wrong from the second one on
_decode_masks: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def decode_attention_mask(model: Any) -> bool:
    """Whether ``model``'s decode steps take the attention mask over the whole history (True) or none.

    Found by behaviour, once per model: a short prompt is prefilled, its last tokens decoded one by one
    from the cache the prefill returned, and each step's logits compared with a whole forward over the
    same tokens; first with the mask over the whole history (what attention models need), then without one
    (what state-space models want: transformers 5.25's mamba applies the mask to the new token's hidden
    states and so misreads a whole-history one). Whatever the kind of cache (dynamic, static, sliding,
    hybrid, state-space) and whatever its ``get_seq_length`` counts, a model that resumes from the state
    it was given passes one way. One that resumes neither way (it ignored the cache, as transformers
    <= 5.23 ignores an unknown ``cache=`` keyword) raises ``ModelCacheError`` before it generates.

    A stand-in that declares ``chatstream_decode_mask`` (a recording proxy, the replay ``MockModel``) is
    taken at its word: its forwards are recorded or replayed, and the probe's must be neither.
    """
    declared = getattr(model, "chatstream_decode_mask", None)
    if declared is not None:
        return bool(declared)
    try:
        known = _decode_masks.get(model)
    except TypeError:  # not weak-referenceable: probe each time
        known = None
    if known is not None:
        return known
    found = _probe_decode_mask(model)
    with contextlib.suppress(TypeError):  # not weak-referenceable: probed again next time
        _decode_masks[model] = found
    return found


def _probe_decode_mask(model: Any) -> bool:
    argument = cache_argument(model)
    vocab = max(_vocab_size(model), 2)
    ids = torch.tensor([[1 + (i * 37) % (vocab - 1) for i in range(_PROBE_LENGTH)]], device=_device_of(model))
    ones = torch.ones_like(ids)
    start = _PROBE_LENGTH - _PROBE_STEPS
    differences = []
    with torch.inference_mode():
        wholes = [model(input_ids=ids[:, :n], attention_mask=ones[:, :n], use_cache=False).logits[:, -1, :].float()
                  for n in range(start + 1, _PROBE_LENGTH + 1)]
        rtol, atol = _RESUME_TOLERANCES.get(getattr(model, "dtype", None), (1e-3, 1e-3))
        for with_mask in (True, False):
            cache = output_cache(model(input_ids=ids[:, :start], attention_mask=ones[:, :start], use_cache=True))
            resumes, worst = True, 0.0
            for n, whole in zip(range(start + 1, _PROBE_LENGTH + 1), wholes, strict=True):
                step = model(input_ids=ids[:, n - 1 : n], attention_mask=ones[:, :n] if with_mask else None,
                             use_cache=True, **{argument: cache})
                cache = output_cache(step)
                resumed = step.logits[:, -1, :].float()
                if not torch.allclose(resumed, whole, rtol=rtol, atol=atol):  # NaN logits fail here too
                    resumes = False
                    worst = max(worst, float((resumed - whole).abs().nan_to_num(float("inf")).max()))
            if resumes:
                return with_mask
            differences.append(worst)
    raise ModelCacheError(
        f"{type(model).__name__} did not resume from the KV cache passed as `{argument}=`: a decode step's "
        f"logits differ from a whole forward over the same tokens by up to {differences[0]:.3g} with the attention "
        f"mask over the whole history and {differences[1]:.3g} without one. Its forward names `{argument}` but does "
        "not use it; pass a model whose forward takes `cache` (transformers >= 5.24) or `past_key_values`."
    )
