"""The outline of a Python module, read with `ast`: what `code_outline` returns for Python."""

from __future__ import annotations

import ast
import threading
from collections.abc import Iterator
from typing import Any

_BLOCK_KINDS: dict[type[ast.AST], str] = {
    ast.If: "if", ast.For: "for", ast.AsyncFor: "for", ast.While: "while", ast.Try: "try",
    ast.TryStar: "try", ast.With: "with", ast.AsyncWith: "with", ast.Match: "match",
}  # fmt: skip
_DefinitionNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef

DEFINITION_KEYS = frozenset(
    {"kind", "name", "qualname", "line", "end_line", "lines", "max_depth", "params"}
    | {"signature", "docstring", "is_public", "blocks"}
)
"""The keys of every definition `python_definitions` returns (other outline tools differ)."""


_PARSE_LOCK = threading.Lock()


def parse_python(source: str) -> ast.Module:
    """`ast.parse`, one thread at a time.

    CPython 3.11 can fail concurrent parses in worker threads with `SystemError: AST constructor
    recursion depth mismatch` (gh-106905), and sync tools run in worker threads.
    """
    with _PARSE_LOCK:
        return ast.parse(source)


def python_definitions(source: str) -> list[dict[str, Any]]:
    """Every class, function and method of a Python module, in source order.

    Raises:
        SyntaxError: `source` is not valid Python.
        ValueError: `source` contains a NUL byte.
    """
    return list(_definitions(parse_python(source).body, prefix="", public=True))


def _definitions(body: list[ast.stmt], prefix: str, public: bool) -> Iterator[dict[str, Any]]:
    for node in body:
        if isinstance(node, _DefinitionNode):
            kind = "class" if isinstance(node, ast.ClassDef) else "method" if prefix else "function"
            yield _describe(node, kind, prefix, public)
        if isinstance(node, ast.ClassDef):
            inner_public = public and not node.name.startswith("_")
            yield from _definitions(node.body, f"{prefix}{node.name}.", inner_public)


def _describe(node: _DefinitionNode, kind: str, prefix: str, public: bool) -> dict[str, Any]:
    if isinstance(node, ast.ClassDef):
        bases = ", ".join(ast.unparse(b) for b in [*node.bases, *node.keywords])
        signature = f"class {node.name}" + (f"({bases})" if bases else "")
        inits = [
            n.args for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"
        ]
        params = _params(inits[0]) if inits else []
    else:
        returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
        is_async = "async " if isinstance(node, ast.AsyncFunctionDef) else ""
        signature = f"{is_async}def {node.name}({_format_args(node.args)}){returns}"
        params = _params(node.args)
    end = node.end_lineno or node.lineno
    return {
        "kind": kind,
        "name": node.name,
        "qualname": prefix + node.name,
        "line": node.lineno,
        "end_line": end,
        "lines": end - node.lineno + 1,
        "max_depth": _depth(node.body),
        "params": params,
        "signature": signature,
        "docstring": (ast.get_docstring(node) or "").strip().split("\n")[0],
        "is_public": public and not node.name.startswith("_"),
        "blocks": [
            {"kind": _BLOCK_KINDS[type(s)], "line": s.lineno, "end_line": s.end_lineno}
            for s in node.body
            if type(s) in _BLOCK_KINDS and (s.end_lineno or s.lineno) - s.lineno >= 4
        ],
    }


def _format_args(args: ast.arguments) -> str:
    """The parameters as written in PEP 8 style (`ast.unparse` gives `a: int=2`)."""
    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    parts = [_format_arg(a, d) for a, d in zip(positional, defaults, strict=True)]
    if args.posonlyargs:
        parts.insert(len(args.posonlyargs), "/")
    if args.vararg or args.kwonlyargs:
        parts.append("*" + (_format_arg(args.vararg, None) if args.vararg else ""))
    parts += [_format_arg(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    return ", ".join(parts + (["**" + _format_arg(args.kwarg, None)] if args.kwarg else []))


def _format_arg(arg: ast.arg, default: ast.expr | None) -> str:
    text = ast.unparse(arg)
    if default is None:
        return text
    return f"{text}{' = ' if arg.annotation else '='}{ast.unparse(default)}"


def _params(args: ast.arguments) -> list[str]:
    every = [*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs, args.kwarg]
    return [a.arg for a in every if a is not None and a.arg not in ("self", "cls")]


def _depth(body: list[ast.stmt]) -> int:
    """The deepest nesting of compound statements in `body`; an `elif` counts as its `if`."""
    deepest = 0
    for node in body:
        inner = [_depth(b) for b in _child_bodies(node)]
        if isinstance(node, ast.If) and [type(n) for n in node.orelse] == [ast.If]:
            inner[-1] -= 1  # an `elif` is a sibling of its `if`, not a level below it
        deepest = max(deepest, max(inner, default=0) + (type(node) in _BLOCK_KINDS))
    return deepest


def _child_bodies(node: ast.stmt) -> list[list[ast.stmt]]:
    bodies: list[list[ast.stmt]] = []
    for _, value in ast.iter_fields(node):
        if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
            bodies.append(value)
        elif isinstance(value, list):  # except handlers and match cases hold bodies too
            bodies += [v.body for v in value if isinstance(v, ast.ExceptHandler | ast.match_case)]
    return bodies
