"""Command lines that pytest reads differently from how they were meant, caught before any test runs.

pytest looks for the rootdir and the ini file *before* it loads plugins, so it does not know yet that
``--probe-model`` takes a value: in ``pytest --probe-model /elsewhere/model`` it takes the model for a
test path and may root the run there, ignoring the project's ini file (pytest-dev/pytest#8846).
And ``--probe`` takes an optional mode, so ``pytest --probe tests/test_x.py`` gives it the path as
its mode. This module finds both, so the plugin can run what was meant or stop with a usage error.
"""

from __future__ import annotations

import inspect
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._paths import resolve_dir


def full_command_line(addopts: str, args: Sequence[str]) -> list[str]:
    """What the user typed: the ``PYTEST_ADDOPTS`` environment variable's arguments, then the command line's."""
    return [*shlex.split(addopts), *args]


def spaced_value(args: Sequence[str], option: str) -> str | None:
    """The value given to ``option`` as a separate argument (``--opt VALUE``); the last one wins."""
    value = None
    for index, arg in enumerate(args[:-1]):
        if arg == option:
            value = args[index + 1]
    return value


def is_test_path(value: str, invocation_dir: Path) -> bool:
    """Whether ``value`` names an existing file or directory, as a test argument (``path::name``) would."""
    path = value.split("::", 1)[0]
    return bool(path) and not path.startswith("-") and resolve_dir(path, invocation_dir).exists()


def _determine_setup() -> Callable[..., Any] | None:
    try:
        from _pytest.config.findpaths import determine_setup
    except ImportError:  # pragma: no cover - a pytest that moved it
        return None
    return determine_setup


def setup_without(
    *,
    test_args: Sequence[str],
    inifile: str | None,
    override_ini: Sequence[str] | None,
    rootdir: str | None,
    invocation_dir: Path,
) -> tuple[Path, Path | None] | None:
    """The (rootdir, inifile) pytest finds for these test arguments, or None when that cannot be asked."""
    determine = _determine_setup()
    if determine is None:
        return None
    offered = {"inifile": inifile, "override_ini": override_ini, "args": list(test_args),
               "rootdir_cmd_arg": rootdir or None, "invocation_dir": invocation_dir}
    try:
        accepted = inspect.signature(determine).parameters
        rootpath, inipath, *_ = determine(**{k: v for k, v in offered.items() if k in accepted})
    except (TypeError, ValueError):  # pragma: no cover - another pytest's signature
        return None
    return Path(rootpath), (Path(inipath) if inipath else None)


def model_path_misread(
    *,
    command_line: Sequence[str],
    test_args: Sequence[str],
    rootpath: Path,
    inipath: Path | None,
    inifile: str | None,
    override_ini: Sequence[str] | None,
    rootdir: str | None,
    invocation_dir: Path,
) -> str | None:
    """A usage error's text when ``--probe-model PATH`` (with a space) moved the rootdir or the ini file.

    ``test_args`` are the run's real test arguments. None when the spelling did no harm (the model
    lies inside the project, say) or was not used.
    """
    value = spaced_value(command_line, "--probe-model")
    if value is None or not is_test_path(value, invocation_dir):
        return None
    meant = setup_without(test_args=test_args, inifile=inifile, override_ini=override_ini, rootdir=rootdir,
                          invocation_dir=invocation_dir)
    if meant is None:  # cannot ask pytest: refuse the spelling whenever the model lies outside the rootdir
        harmless = resolve_dir(value, invocation_dir).resolve().is_relative_to(invocation_dir.resolve())
        if harmless:
            return None
        meant_text = "the project's"
    elif meant == (rootpath, inipath):
        return None
    else:
        meant_text = f"rootdir {meant[0]} and ini file {meant[1] or '(none)'}"
    return (
        f"pytest read `--probe-model {value}` (with a space) as the test path {value!r} when it looked for "
        f"the rootdir and ini file, so this run got rootdir {rootpath} and ini file {inipath or '(none)'} "
        f"instead of {meant_text} (pytest-dev/pytest#8846), and its cassettes would land in the wrong place. "
        f"Write it with '=': --probe-model={value} (or set the environment variable CHATSTREAM_MODEL_PATH, "
        "or the ini option chatstream_model_path)."
    )


def probe_path_message(value: str) -> str:
    """A usage error's text for ``--probe VALUE`` where VALUE is neither a mode nor a test path."""
    return (
        f"--probe got {value!r}, which is neither a probe mode (all, missing, verify, repeat:N) nor an existing "
        f"test path. Write the mode with '=' (--probe=all, --probe=missing, --probe=verify, --probe=repeat:10), "
        f"and put test paths before --probe or after --probe=MODE: pytest --probe=all tests/test_x.py"
    )
