"""Where a test's cassette lives.

A test's default cassette is ``<cassette_dir>/<module path>/<test name>``: the module's path relative
to the rootdir without ``.py``, then the test's name (a class-based test adds the class as a directory).
A named cassette (``@pytest.mark.chatstream_cassette("name")``) is ``<cassette_dir>/<name>``. Characters
that are unsafe in file names are replaced by ``_``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from ._errors import configuration_error

MARKER = "chatstream_cassette"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_PART = 120


def safe_part(name: str) -> str:
    """``name`` as one safe path component: unsafe runs become ``_``, no leading dot, at most 120 chars.

    A leading dot is replaced so no cassette is hidden or looks like ``..`` (the plugin's own staging
    directories are the dot-names).
    """
    part = _UNSAFE.sub("_", name)
    if part.startswith("."):
        part = "_" + part[1:]
    return (part or "_")[:_MAX_PART]


def default_cassette_relpath(module_relpath: str | PurePosixPath, nodeid_tail: str) -> PurePosixPath:
    """Cassette path (relative to the cassette dir) of a test.

    ``module_relpath`` is the module's path relative to the rootdir (``tests/test_api.py``);
    ``nodeid_tail`` is what follows the module in the node id (``TestApi::test_stream[1-2]``).
    """
    module = PurePosixPath(module_relpath)
    module = module.with_suffix("") if module.suffix == ".py" else module
    parts = [safe_part(p) for p in module.parts if p not in ("", "/")]
    parts += [safe_part(p) for p in nodeid_tail.split("::") if p]
    return PurePosixPath(*parts)


def named_cassette_relpath(name: object) -> PurePosixPath:
    """Cassette path of a named cassette; ``/`` separates sub-directories, nothing may escape the dir."""
    if not isinstance(name, str) or not name.strip():
        raise configuration_error(
            f"chatstream_cassette marker: the cassette name (={name!r}) must be a non-empty string, "
            "such as @pytest.mark.chatstream_cassette('greeting')."
        )
    raw = PurePosixPath(name.replace("\\", "/"))
    if raw.is_absolute() or ".." in raw.parts:
        raise configuration_error(
            f"chatstream_cassette marker: the cassette name {name!r} must stay inside the cassette "
            "directory; use a relative name without '..'."
        )
    return PurePosixPath(*(safe_part(p) for p in raw.parts if p not in ("", ".")))


def module_cassette_dir(nodeid: str) -> str:
    """The directory of the default cassettes of the module that the test ``nodeid`` belongs to."""
    return default_cassette_relpath(nodeid.partition("::")[0], "").as_posix()


def cassette_relpath_for(nodeid: str, name: object | None, choose: Callable[[str], str | None]) -> str:
    """The cassette of the test ``nodeid``, relative to the cassette directory: ``name`` (its marker's) when
    given, else the path ``choose`` makes of the default one (a project's ``pytest_chatstream_cassette_path``
    hook; None keeps the default). Raises ConfigurationError for a name that is not usable."""
    if name is not None:
        return named_cassette_relpath(name).as_posix()
    module, _, tail = nodeid.partition("::")
    default = default_cassette_relpath(module, tail).as_posix()
    chosen = choose(default)
    return default if chosen is None else named_cassette_relpath(chosen).as_posix()


def collisions(tests: Sequence[tuple[str, str, bool]]) -> list[str | None]:
    """Why each test (None: no reason) may not use its cassette: ``tests`` are (node id, cassette, whether a
    marker names the cassette) in collection order.

    Tests that name a cassette may share it; a test that does not, and whose cassette an earlier test already
    uses, got it by accident (the node ids differ only in characters replaced in file names): both are refused.
    """
    problems: list[str | None] = [None] * len(tests)
    owners: dict[str, int] = {}
    for index, (test, rel, named) in enumerate(tests):
        owner = owners.setdefault(rel, index)
        if owner != index and not named:
            problems[owner] = problems[index] = (
                f"{tests[owner][0]} and {test} would share the cassette {rel} (their names differ only in "
                f"characters replaced in file names); give one of them @pytest.mark.{MARKER}('a-name')."
            )
    return problems


def resolve_dir(value: str | Path, base: Path) -> Path:
    """``value`` as an absolute path, relative ones taken from ``base``; ``~`` expanded."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def relpath_or_abs(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` when it is inside it (for messages), else absolute."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)
