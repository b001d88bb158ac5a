"""pytest_chatstream._paths: where a test's cassette lives."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from chatstream.exceptions import ConfigurationError
from pytest_chatstream._paths import (
    default_cassette_relpath,
    named_cassette_relpath,
    relpath_or_abs,
    resolve_dir,
    safe_part,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("test_plain", "test_plain"),
        ("test_x[a-b]", "test_x_a-b_"),
        ("test_x[hello world/é]", "test_x_hello_world_"),
        ("..", "_."),
        (".hidden", "_hidden"),
        ("", "_"),
    ],
)
def test_safe_part_replaces_unsafe_characters(name: str, expected: str) -> None:
    assert safe_part(name) == expected


def test_safe_part_bounds_the_length() -> None:
    assert len(safe_part("t" * 500)) == 120


def test_default_path_is_module_path_then_test_name() -> None:
    assert default_cassette_relpath("tests/test_api.py", "test_stream[1-2]") == PurePosixPath(
        "tests/test_api/test_stream_1-2_"
    )
    assert default_cassette_relpath("tests/test_api.py", "TestApi::test_stream") == PurePosixPath(
        "tests/test_api/TestApi/test_stream"
    )


def test_default_path_never_escapes_the_cassette_dir() -> None:
    rel = default_cassette_relpath("../outside/test_x.py", "test_y")
    assert ".." not in rel.parts and not rel.is_absolute()


def test_named_path_allows_subdirectories() -> None:
    assert named_cassette_relpath("chat/greeting") == PurePosixPath("chat/greeting")
    assert named_cassette_relpath("a b") == PurePosixPath("a_b")


@pytest.mark.parametrize("name", ["../x", "/abs", "a/../../b", "", "  ", None, 3])
def test_named_path_refuses_escapes_and_non_strings(name: object) -> None:
    with pytest.raises(ConfigurationError, match="chatstream_cassette marker"):
        named_cassette_relpath(name)


def test_resolve_dir_and_relpath(tmp_path: Path) -> None:
    assert resolve_dir("fixtures/cassettes", tmp_path) == tmp_path / "fixtures/cassettes"
    assert resolve_dir(str(tmp_path / "abs"), Path("/elsewhere")) == tmp_path / "abs"
    assert relpath_or_abs(tmp_path / "a" / "b", tmp_path) == "a/b"
    assert relpath_or_abs(Path("/other/place"), tmp_path) == "/other/place"
