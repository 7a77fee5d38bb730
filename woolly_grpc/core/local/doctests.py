"""Doctest examples, in docstrings and documentation files, and whether the project runs them."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from woolly_grpc.core._outline import parse_python

_PROMPT = re.compile(r"^(\s*)>>> ?(.*)$")
_DIRECTIVE = re.compile(r"^(\s*)\.\. (testsetup|testcode)::.*$")
_TARGET = re.compile(r"(?:DocTestSuite|testmod)\(\s*([\w.'\"]+)")
_SOURCE_DOCTESTS = ("--doctest-modules", "DocTestSuite", "doctest.testmod", "xdoctest")
_DOCS_DOCTESTS = ("--doctest-glob", "doctest.testfile", "DocFileSuite", "sphinx.ext.doctest")


@dataclass(frozen=True)
class Example:
    """One `>>>` example: its code, what it should print, and its line in the file."""

    line: int
    source: str
    want: str


def examples(text: str, first_line: int = 1) -> list[Example]:
    """The `>>>` examples of a docstring or document whose first line is `first_line`."""
    found: list[Example] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _PROMPT.match(lines[i])
        if not match:
            i += 1
            continue
        indent, code, start = match.group(1), [match.group(2)], i
        i += 1
        while i < len(lines) and lines[i].startswith(indent + "..."):
            code.append(lines[i][len(indent) + 4 :])
            i += 1
        want = []
        while i < len(lines) and lines[i].strip() and not _PROMPT.match(lines[i]):
            want.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        found.append(Example(first_line + start, "\n".join(code), "\n".join(want)))
    return found


def setup_blocks(text: str) -> list[tuple[int, str]]:
    """(line, code) of the `.. testsetup::` and `.. testcode::` blocks of a reST document."""
    blocks: list[tuple[int, str]] = []
    lines = text.splitlines()
    for number, line in enumerate(lines):
        match = _DIRECTIVE.match(line)
        if not match:
            continue
        body, start = [], number + 1
        while start < len(lines) and not lines[start].strip():
            start += 1
        for following in lines[start:]:
            if following.strip() and len(following) - len(following.lstrip()) <= len(match[1]):
                break
            body.append(following)
        code = "\n".join(body)
        blocks.append((start + 1, code))
    return blocks


def snippet(pieces: list[tuple[int, str]]) -> ast.Module:
    """One module of code pieces, each parsed at its own line.

    Pieces that do not parse are left out (an example may not be Python at all).
    """
    body: list[ast.stmt] = []
    for line, code in pieces:
        try:
            tree = parse_python("\n" * (line - 1) + _dedent(code))
        except (SyntaxError, ValueError):
            continue
        body += tree.body
    return ast.Module(body=body, type_ignores=[])


def docstring_examples(node: ast.AST) -> list[Example]:
    """The examples of a definition's or module's docstring, at their lines in the file."""
    body = getattr(node, "body", None)
    if not body or not isinstance(body[0], ast.Expr):
        return []
    value = body[0].value
    if not isinstance(value, ast.Constant) or not isinstance(value.value, str):
        return []
    return examples(value.value, value.lineno)


def runs_doctests(configs: list[str]) -> tuple[bool, bool]:
    """Whether the project runs its sources' and its documents' doctests.

    Read from its configuration files and test code.
    """
    joined = "\n".join(configs)
    return any(m in joined for m in _SOURCE_DOCTESTS), any(m in joined for m in _DOCS_DOCTESTS)


def doctest_scope(configs: list[str], modules: list[str]) -> list[str]:
    """The modules whose docstring examples run.

    All of them with `--doctest-modules`, else those named in `DocTestSuite(...)` or
    `doctest.testmod(...)` calls (`mi.more` counts for a module whose name ends in `.more`).
    """
    joined = "\n".join(configs)
    if "--doctest-modules" in joined or "xdoctest" in joined:
        return modules
    named = {m.strip("'\"") for m in _TARGET.findall(joined)}
    return [
        m for m in modules if any(m == n or m.endswith("." + n.rsplit(".", 1)[-1]) for n in named)
    ]


def _dedent(code: str) -> str:
    lines = code.splitlines()
    margin = min((len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()), default=0)
    return "\n".join(ln[margin:] for ln in lines)
