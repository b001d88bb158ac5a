"""The import rules of chatstream (CONTRIBUTING.md, docs/architecture.md), read with ast: no import circle
(TYPE_CHECKING imports count); only serving (and the 0.3 home) imports fastapi or starlette; the engine reaches
neither serving nor cassette code; cassette code never reaches serving; the cassette format never reaches the
engine; replay never reaches the recorder; only the 0.3 home uses 0.3's module paths, and today's code never
imports it; chatstream/'s top holds only the shared modules, the subsystems and the 0.3 home."""

import ast
from pathlib import Path

import chatstream
from chatstream.compat03 import PATHS

ROOT = Path(chatstream.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str], in_functions: bool = False) -> set[str]:
    """The chatstream modules ``path`` imports at module level (in a function: counted only with
    ``in_functions``; for circles it is not, since it runs on use)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not in_functions:
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name in modules)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                for alias in node.names:
                    candidate = f"{target}.{alias.name}"
                    found.add(candidate if candidate in modules else target)
            visit(ast.iter_child_nodes(node))

    visit(ast.parse(path.read_text()).body)
    return {m for m in found if m in modules and m != name and m != "chatstream"}


def test_the_package_has_no_import_circle():
    paths = sorted(ROOT.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = {module_name(p): imports_of(p, modules) for p in paths}
    cycles, state = [], {}

    def walk(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                walk(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def _graph(in_functions: bool = False):
    paths = sorted(ROOT.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return ({module_name(p): imports_of(p, modules, in_functions) for p in paths},
            {module_name(p): p for p in paths})


def _reach(graph, start):
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _third_party(path: Path) -> set[str]:
    """Top-level names of every package ``path`` imports, in functions too."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def in_layer(module: str, layer: str) -> bool:
    return module == f"chatstream.{layer}" or module.startswith(f"chatstream.{layer}.")


# ChatStream 0.3's serving names over today's code (its client-role classes and middleware)
SERVING_03_PATHS = ("chatstream.compat03",)


def test_only_the_serving_layer_imports_fastapi_or_starlette():
    _, paths = _graph()
    offenders = {name: sorted(_third_party(path) & {"fastapi", "starlette"}) for name, path in paths.items()
                 if not in_layer(name, "serving") and not name.startswith(SERVING_03_PATHS)}
    assert not {k: v for k, v in offenders.items() if v}


def test_the_engine_imports_neither_serving_nor_cassette_code():
    graph, _ = _graph()
    for name in (m for m in graph if in_layer(m, "engine")):
        bad = sorted(m for m in _reach(graph, name) if in_layer(m, "serving") or in_layer(m, "cassettes"))
        assert not bad, f"{name} reaches {bad}"


def test_cassette_code_does_not_import_serving():
    graph, _ = _graph()
    for name in (m for m in graph if in_layer(m, "cassettes")):
        bad = sorted(m for m in _reach(graph, name) if in_layer(m, "serving"))
        assert not bad, f"{name} reaches {bad}"


# The cassette format: every module of chatstream/cassettes/ (the files' layout and manifest, the JSON form of
# recorded values, miss messages, places and names, fingerprints, the answers a cassette holds, comparing two
# cassettes, the unused report) except these three, which stand in for a live model: they wrap one
# (recording, probe) or play one back (replay), so they use the engine's sampler, batch rows and KV cache.
MODEL_STAND_INS = {"chatstream.cassettes.recording", "chatstream.cassettes.probe", "chatstream.cassettes.replay"}


def cassette_format(graph: dict) -> list[str]:
    return sorted(m for m in graph if in_layer(m, "cassettes") and m not in MODEL_STAND_INS)


def test_the_cassette_format_knows_no_engine():
    """Not even in a function: reading a cassette must never need the decode loop (tools that run models,
    such as ``chatstream cassette verify``, live in serving/)."""
    graph, _ = _graph(in_functions=True)
    assert "chatstream.cassettes.cassette" in cassette_format(graph)
    for name in cassette_format(graph):
        bad = sorted(m for m in _reach(graph, name) if in_layer(m, "engine"))
        assert not bad, f"{name} (cassette format) reaches the engine: {bad}"


def test_replay_does_not_import_the_recorder():
    graph, _ = _graph()
    reached = _reach(graph, "chatstream.cassettes.replay")
    assert not reached & {"chatstream.cassettes.recording", "chatstream.cassettes.probe"}, sorted(reached)


def test_chatstream_top_holds_the_shared_modules_the_subsystems_and_the_03_home():
    _, paths = _graph()
    for layer in ("engine", "serving", "cassettes", "compat03"):
        assert f"chatstream.{layer}" in paths
    top = {p.name for p in ROOT.iterdir() if p.name != "__pycache__"}
    # web/: the chat page's files; tiny_chat/: the bundled model, in an installed wheel only (both package data)
    allowed = {"__init__.py", "exceptions.py", "bundled.py", "py.typed", "engine", "serving", "cassettes",
               "compat03", "web", "tiny_chat"}
    assert top <= allowed, f"unexpected at chatstream/'s top: {sorted(top - allowed)}"


# ChatStream 0.3's module paths: answered by chatstream/compat03 (its PATHS table), never used by today's code.
OLD_PATHS = {f"chatstream.{path}" for path in PATHS}
REPO = ROOT.parent
# Code that may name 0.3's paths: the home itself, the package's __init__ (which installs it), 0.3's own code
# and tests, and this test.
MAY_USE_03_PATHS = ("chatstream/compat03/", "chatstream/__init__.py", "examples/compat03/",
                    "tests/test_compat03_", "tests/test_import_graph.py")


def _imported_names(path: Path) -> set[str]:
    """Every module name ``path`` imports (in functions too), with ``module.name`` for ``from module import name``."""
    parts = path.relative_to(REPO).with_suffix("").parts
    package = ".".join(parts if path.name == "__init__.py" else parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def _python_files_outside_the_03_home() -> list[Path]:
    folders = ("chatstream", "pytest_chatstream", "tests", "bench", "tools", "examples")
    files = [p for folder in folders for p in sorted((REPO / folder).rglob("*.py"))]
    return [p for p in files if not p.relative_to(REPO).as_posix().startswith(MAY_USE_03_PATHS)]


def test_no_code_outside_the_03_home_imports_a_03_path():
    files = _python_files_outside_the_03_home()
    assert any(p.name == "chat_stream.py" for p in files)
    found = {p.relative_to(REPO).as_posix(): sorted(_imported_names(p) & OLD_PATHS) for p in files}
    assert not {k: v for k, v in found.items() if v}, "0.3 paths imported outside chatstream/compat03"


def test_todays_code_never_imports_the_03_home():
    """The 0.3 paths point at today's code, never the reverse (ChatStream's 0.3 attributes are registered by
    the home in serving.extra_attributes)."""
    graph, _ = _graph(in_functions=True)
    for name in (m for m in graph if not in_layer(m, "compat03") and m != "chatstream"):  # the root installs it
        bad = sorted(m for m in graph[name] if in_layer(m, "compat03"))
        assert not bad, f"{name} imports {bad}"
