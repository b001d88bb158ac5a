"""The runnable parts of the documentation: every Python block and shell command in README.md and docs/*.md.

tests/test_docs.py runs them; this module only reads Markdown (no pytest). The conventions, also in
CONTRIBUTING.md ("Documentation that runs"):

- Fenced blocks tagged ``python`` are run in order, one namespace per document, in the document's
  scratch directory. A block whose first line is a comment naming a file (``# tests/test_chat.py``,
  ``# pytest.ini``; any language) is that file: it is written into the scratch directory instead.
- Fenced blocks tagged ``bash``, ``sh`` or ``shell``: every line that is not blank or a comment is a
  command (a line ending in ``\\`` continues on the next). ``console`` blocks: the lines after ``$ ``.
  Commands run in the document's scratch directory, or in the checkout when the block's first line is
  the comment ``# in the chatstream checkout``; each must exit 0.
- ``not run: REASON`` in the first line's comment of a block skips the whole block; in a command's
  trailing comment it skips that command. The reason stays visible in the rendered page.
- Other fences (``text``, ``json``, ``ini`` without a file name, untagged) are shown output or formats,
  never run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PYTHON_LANGS = ("python", "py")
SHELL_LANGS = ("bash", "sh", "shell", "console")
IN_CHECKOUT = "# in the chatstream checkout"

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
_NOT_RUN = re.compile(r"\bnot run: ([^)]+)")
_FILE_HEADER = re.compile(r"^#\s*(?P<path>[\w.-]+(?:/[\w.-]+)*\.(?:py|ini|toml|cfg|json|txt))\s*$")
_TRAILING_COMMENT = re.compile(r"\s#\s.*$")


@dataclass(frozen=True)
class Snippet:
    """One runnable unit of a document: a Python block, a file to write, or one shell command."""

    doc: str                 # the document's path relative to the repository root
    line: int                # 1-based line of the block's opening fence (Python, file) or of the command
    kind: str                # "python", "file" or "shell"
    text: str                # the code, the file's content, or the command
    skip: str | None = None  # the reason it is not run, from a `not run: REASON` marker
    path: str | None = None  # "file": where it goes in the scratch directory
    in_checkout: bool = False  # "shell": run in the repository root instead of the scratch directory

    @property
    def id(self) -> str:
        head = self.path if self.kind == "file" else self.text.splitlines()[0] if self.text else ""
        return f"{self.doc}:{self.line}:{head[:60]}"


def _not_run(line: str) -> str | None:
    comment = line[line.index("#"):] if "#" in line else ""
    found = _NOT_RUN.search(comment)
    return found.group(1).strip() if found else None


def _blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """(line of the opening fence, language, lines) of every fenced block."""
    blocks, lines, index = [], text.splitlines(), 0
    while index < len(lines):
        opened = _FENCE.match(lines[index])
        if opened is None:
            index += 1
            continue
        fence, start, body = opened.group("fence"), index, []
        index += 1
        while index < len(lines) and not lines[index].strip().startswith(fence):
            body.append(lines[index][len(opened.group("indent")):])
            index += 1
        blocks.append((start + 1, opened.group("info").lower(), body))
        index += 1
    return blocks


def _commands(lang: str, body: list[str], first: int) -> list[tuple[int, str]]:
    """(line, command) of a shell block; ``first`` is the line number of the block's first line."""
    commands: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for offset, raw in enumerate(body):
        line = raw.rstrip()
        if pending is not None:
            pending = (pending[0], pending[1] + "\n" + line)
        elif lang == "console":
            if not line.startswith("$ "):
                continue
            pending = (first + offset, line[2:])
        elif line.strip() and not line.lstrip().startswith("#"):
            pending = (first + offset, line)
        else:
            continue
        if not pending[1].endswith("\\"):
            commands.append(pending)
            pending = None
    if pending is not None:
        commands.append(pending)
    return commands


def snippets(doc: Path, root: Path) -> list[Snippet]:
    """Every runnable snippet of ``doc`` in document order."""
    name = doc.relative_to(root).as_posix()
    found: list[Snippet] = []
    for line, lang, body in _blocks(doc.read_text(encoding="utf-8")):
        head = body[0].strip() if body else ""
        skip = _not_run(head) if head.startswith("#") else None
        if lang in SHELL_LANGS:
            in_checkout = head.lower().startswith(IN_CHECKOUT)
            for at, command in _commands(lang, body, line + 1):
                comment = _TRAILING_COMMENT.search(command)
                own = _not_run(comment.group(0)) if comment else None
                found.append(Snippet(name, at, "shell", command, skip or own, in_checkout=in_checkout))
            continue
        header_lines = [text.strip() for text in body[:2] if text.strip().startswith("#")]
        files = [_FILE_HEADER.match(text) for text in header_lines]
        file_header = next((match for match in files if match), None)
        if file_header is not None:
            found.append(Snippet(name, line, "file", "\n".join(body) + "\n", skip, path=file_header.group("path")))
        elif lang in PYTHON_LANGS:
            found.append(Snippet(name, line, "python", "\n".join(body) + "\n", skip))
    return found


def documents(root: Path) -> list[Path]:
    """README.md and every docs/*.md, picked up as they are added."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]
