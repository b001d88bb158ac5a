"""chatstream.cassettes._cassette_manifest: no local path is written into a manifest."""

from __future__ import annotations

import os

import pytest

from chatstream.cassettes._cassette_manifest import portable_name


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/work/main/fixtures/tiny-chat", "tiny-chat"),
        ("/work/main/fixtures/tiny-chat/", "tiny-chat"),
        ("/home/ann/.cache/huggingface/hub/models--org--name/snapshots/0123abcd", "org/name"),
        ("/home/ann/.cache/huggingface/hub/models--org--name/snapshots/0123abcd/config.json", "org/name"),
        ("C:\\Users\\ann\\models\\my-model", "my-model"),
        ("~/models/my-model", "my-model"),
    ],
)
def test_local_paths_become_a_hub_id_or_their_last_component(path: str, name: str) -> None:
    assert portable_name(path) == name


def test_paths_under_the_home_directory_lose_it() -> None:
    home = os.path.expanduser("~")
    assert portable_name(os.path.join(home, "m")) == "m"


@pytest.mark.parametrize("text", ["org/name", "gpt2", "relative/dir", "/", "</s>", "/x", "", "a\n/b/c/d"])
def test_anything_else_is_kept(text: str) -> None:
    assert portable_name(text) == text
