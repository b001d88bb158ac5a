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


def test_a_tests_cassette_is_its_markers_name_else_the_hooks_choice_else_its_node_ids() -> None:
    from pytest_chatstream._paths import cassette_relpath_for

    asked: list[str] = []

    def keep(default: str) -> None:
        asked.append(default)

    assert cassette_relpath_for("tests/test_api.py::TestChat::test_x[a b]", None, keep) == \
        "tests/test_api/TestChat/test_x_a_b_"
    assert asked == ["tests/test_api/TestChat/test_x_a_b_"]  # the hook sees the default it may replace
    assert cassette_relpath_for("tests/test_api.py::test_x", None, lambda default: f"by-hook/{default}") == \
        "by-hook/tests/test_api/test_x"
    # a marker's name wins, and the hook is not asked
    assert cassette_relpath_for("tests/test_api.py::test_x", "shared/greeting", lambda d: 1 / 0) == "shared/greeting"
    with pytest.raises(ConfigurationError, match="must stay inside the cassette directory"):
        cassette_relpath_for("tests/test_api.py::test_x", None, lambda default: "../outside")
    with pytest.raises(ConfigurationError, match="must be a non-empty string"):
        cassette_relpath_for("tests/test_api.py::test_x", "", lambda default: None)


def test_the_cassette_dir_of_a_tests_module() -> None:
    from pytest_chatstream._paths import module_cassette_dir

    assert module_cassette_dir("tests/sub/test_api.py::TestChat::test_x") == "tests/sub/test_api"
    assert module_cassette_dir("test_api.py") == "test_api"


def test_tests_whose_unnamed_cassettes_collide_are_both_refused() -> None:
    from pytest_chatstream._paths import collisions

    tests = [
        ("t.py::test_x[a b]", "t/test_x_a_b_", False),
        ("t.py::test_y", "t/test_y", False),
        ("t.py::test_x[a/b]", "t/test_x_a_b_", False),  # the same cassette by accident
        ("t.py::test_z", "shared", True),
        ("t.py::test_w", "shared", True),  # named: shared on purpose
        ("t.py::test_v", "t/test_y", True),  # names the cassette test_y uses by default: allowed
    ]
    problems = collisions(tests)
    expected = ("t.py::test_x[a b] and t.py::test_x[a/b] would share the cassette t/test_x_a_b_ (their names "
                "differ only in characters replaced in file names); give one of them "
                "@pytest.mark.chatstream_cassette('a-name').")
    assert problems == [expected, None, expected, None, None, None]
    # an unnamed test joining a named cassette's path is refused with the named one
    assert collisions([("t.py::a", "shared", True), ("t.py::b", "shared", False)])[0].startswith(
        "t.py::a and t.py::b would share the cassette shared")
