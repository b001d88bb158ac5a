"""Async fixtures that run under pytest-asyncio, in any ``asyncio_mode``, and under anyio.

pytest-asyncio's strict mode runs only the async fixtures declared with ``pytest_asyncio.fixture``, so when it
is installed :func:`async_fixture` declares them that way, and keeps the plain function. For a test that anyio
runs, the plugin's ``pytest_fixture_setup`` hands anyio the plain function instead (:func:`plain_function`),
so the fixture runs in the loop of the test that uses it whichever plugin wraps first. Like ``plugin.py``, this
module uses pytest: it declares fixtures.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import pytest

_PLAIN: dict[Callable[..., Any], Callable[..., Any]] = {}  # asyncio-declared copy -> plain function


def async_fixture(func: Callable[..., Any], name: str) -> Any:
    """``func`` (an async generator function) declared as the fixture ``name``."""
    try:
        import pytest_asyncio
    except ImportError:
        return pytest.fixture(func, name=name)
    copy = types.FunctionType(func.__code__, func.__globals__, name, func.__defaults__, func.__closure__)
    copy.__doc__, copy.__qualname__, copy.__kwdefaults__ = func.__doc__, name, func.__kwdefaults__
    copy.__annotations__ = dict(func.__annotations__)
    _PLAIN[copy] = func
    return pytest_asyncio.fixture(copy, name=name)


def plain_function(declared: Callable[..., Any]) -> Callable[..., Any] | None:
    """The plain function of a fixture function that :func:`async_fixture` declared for pytest-asyncio, else None."""
    return _PLAIN.get(declared)
