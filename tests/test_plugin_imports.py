"""pytest_chatstream's layout rule (CONTRIBUTING.md, docs/architecture.md): only ``plugin.py`` (hooks and
fixtures), ``hookspecs.py`` and ``_async_fixtures.py`` (which declares fixtures) import pytest; the other modules
are plain code, called with plain arguments and tested without pytester. ``_cmdline.py`` asks pytest's own
rootdir search, in a function."""

import ast
from pathlib import Path

import pytest_chatstream

PACKAGE = Path(pytest_chatstream.__file__).parent
USES_PYTEST = {"plugin.py", "hookspecs.py", "_async_fixtures.py"}


def pytest_imports(source: str) -> list[str]:
    """The pytest modules ``source`` imports, anywhere in it (pytest, _pytest, pytest_asyncio, ...)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        found += [name for name in names if name.split(".")[0] in ("pytest", "_pytest", "pytest_asyncio")]
    return found


def test_pytest_imports_finds_each_spelling():
    assert pytest_imports("import pytest\nfrom _pytest.runner import x\ndef f():\n    import pytest_asyncio\n") == \
        ["pytest", "_pytest.runner", "pytest_asyncio"]
    assert pytest_imports("from . import plugin\nimport pytest_chatstream_x\n") == []


def test_only_the_plugin_and_its_fixture_declarations_import_pytest():
    offenders = {path.name: pytest_imports(path.read_text()) for path in sorted(PACKAGE.glob("*.py"))
                 if path.name not in USES_PYTEST}
    offenders["_cmdline.py"] = [m for m in offenders["_cmdline.py"] if m != "_pytest.config.findpaths"]
    assert not {name: found for name, found in offenders.items() if found}
    assert pytest_imports((PACKAGE / "plugin.py").read_text())  # the rule would see an import
