"""Hooks a project can implement in its conftest to customise the plugin."""

from __future__ import annotations

import pytest


@pytest.hookspec(firstresult=True)
def pytest_chatstream_cassette_path(item: pytest.Item, default: str) -> str | None:
    """Return the cassette of ``item`` relative to the cassette directory, or None to keep ``default``.

    ``default`` is ``<module path>/<test name>``. A ``chatstream_cassette`` marker with a name wins
    over this hook. The returned path may use ``/`` for sub-directories and must stay inside the
    cassette directory.
    """
