"""The built-in repository tools: read-only, and never outside the repository directory."""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import tomllib
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from pydantic_ai import ModelRetry, RunContext
from pydantic_ai.toolsets import FunctionToolset

from .exceptions import InvalidInput, NotFound

__all__ = ["REPOSITORY_TOOLSET", "RepoDeps", "is_test_path", "resolve_repository"]

_NAME_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_SKIP_DIRS = frozenset({"node_modules", "__pycache__", ".venv", "venv", "dist", "build"})
_MAX_LISTED = 1000
_MAX_READ_BYTES = 64 * 1024
_MAX_SCANNED_BYTES = 1024 * 1024
_LANGUAGES = {
    ".py": "Python", ".pyi": "Python", ".js": "JavaScript", ".mjs": "JavaScript",
    ".jsx": "JavaScript", ".ts": "TypeScript", ".tsx": "TypeScript", ".go": "Go", ".rs": "Rust",
    ".java": "Java", ".kt": "Kotlin", ".rb": "Ruby", ".php": "PHP", ".c": "C", ".h": "C",
    ".cpp": "C++", ".hpp": "C++", ".cs": "C#", ".swift": "Swift", ".sh": "Shell", ".sql": "SQL",
    ".html": "HTML", ".css": "CSS", ".md": "Markdown", ".rst": "reStructuredText",
    ".txt": "Text", ".toml": "TOML", ".json": "JSON", ".yaml": "YAML", ".yml": "YAML",
}  # fmt: skip
_ENTRY_NAMES = frozenset({"__main__.py", "main.py", "app.py", "manage.py", "setup.py"})
_BLOCK_KINDS: dict[type[ast.AST], str] = {
    ast.If: "if", ast.For: "for", ast.AsyncFor: "for", ast.While: "while", ast.Try: "try",
    ast.TryStar: "try", ast.With: "with", ast.AsyncWith: "with", ast.Match: "match",
}  # fmt: skip
_Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


@dataclass(frozen=True)
class RepoDeps:
    """The pydantic-ai `deps` of every run: which repository the tools may read."""

    repository: str
    """The repository name, as the caller gave it."""
    root: Path
    """The resolved repository directory; no tool reads outside it."""


def resolve_repository(repos_root: Path, name: str) -> Path:
    """Return the resolved directory of repository `name` under `repos_root`.

    Raises:
        InvalidInput: the name could escape the root, or its directory is a symlink out of it.
        NotFound: the name is fine but there is no such directory.
    """
    if problem := _name_problem(name):
        raise InvalidInput.one("repository_name", problem)
    root = repos_root.resolve()
    if not _inside(root, root / name) or (root / name).resolve() == root:
        raise InvalidInput.one("repository_name", "links outside the repositories root")
    directory = (root / name).resolve()
    if not directory.is_dir():
        raise NotFound("repository", name, hint="the repositories root has no such directory")
    return directory


def _name_problem(name: str) -> str | None:
    if not name:
        return "must not be empty"
    if len(name) > 100:
        return "must be at most 100 characters"
    if any(unicodedata.category(c).startswith("C") for c in name):
        return "must not contain NUL or other control characters"
    if "/" in name or "\\" in name:
        return "must be a single directory name, without '/' or '\\'"
    if name.startswith("."):
        return "must not be '.', '..' or start with '.'"
    if not _NAME_CHARS.fullmatch(name):
        return "may contain only ASCII letters, digits, '.', '_' and '-'"
    return None


def is_test_path(path: str) -> bool:
    """Whether a repository-relative path looks like a test file."""
    name = PurePosixPath(path).name
    stem = name.split(".")[0]
    markers = (".test.", ".spec.")
    return stem.startswith("test_") or stem.endswith("_test") or any(m in name for m in markers)


def _language(path: str) -> str:
    return _LANGUAGES.get(PurePosixPath(path).suffix.lower(), "Other")


def _safe_path(root: Path, path: str) -> Path:
    """Resolve a tool's path argument, refusing anything that could leave `root`."""
    if "\x00" in path:
        raise ModelRetry("The path contains a NUL byte; give a relative path like `src/app.py`.")
    if unicodedata.normalize("NFKC", path) != path or not path.isprintable():
        raise ModelRetry(
            f"The path {path!r} contains unusual Unicode or control characters (such as fullwidth "
            "dots or slashes); write it with plain characters, e.g. `src/app.py`."
        )
    if "\\" in path:
        raise ModelRetry("Use '/' to separate directories; '\\' is not allowed in paths.")
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts:
        raise ModelRetry(
            f"The path {path!r} leaves the repository; give a path relative to the repository "
            "root, without '..' or a leading '/'."
        )
    if not _inside(root, root / pure):
        raise ModelRetry(f"The path {path!r} leads outside the repository through a symlink.")
    return (root / pure).resolve()


def _inside(root: Path, path: Path) -> bool:
    """Whether `path`, symlinks followed, stays inside `root` (a symlink loop does not)."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        return False


def _files(ctx: RunContext[RepoDeps], directory: str) -> list[tuple[str, Path]]:
    """The (relative path, path) of every file under `directory`, sorted, all inside the root."""
    root = ctx.deps.root
    start = _safe_path(root, directory)
    if not start.is_dir():
        raise ModelRetry(f"`{directory}` is not a directory of the repository; try `.`.")
    found = []
    for dirpath, dirnames, filenames in os.walk(start):  # never descends into symlinked dirs
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS]
        for name in filenames:
            path = Path(dirpath, name)
            if not path.is_symlink() or _inside(root, path):
                found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def _is_binary(path: Path) -> bool:
    with path.open("rb") as handle:
        return b"\x00" in handle.read(8 * 1024)


def _manifest(path: Path, parse: Callable[[str], Any]) -> dict[str, Any]:
    """A parsed pyproject.toml or package.json; empty when unreadable or malformed."""
    try:
        data = parse(path.read_text("utf-8"))
    except (OSError, ValueError):  # includes TOML, JSON and UTF-8 decode errors
        return {}
    return data if isinstance(data, dict) else {}


def _entry_points(root: Path, paths: list[str]) -> list[str]:
    found = [p for p in paths if PurePosixPath(p).name in _ENTRY_NAMES]
    found += [name for name in ("Makefile", "Dockerfile") if name in paths]
    if "pyproject.toml" in paths:  # `paths` holds no symlink out of the root
        project = _manifest(root / "pyproject.toml", tomllib.loads).get("project")
        scripts = project.get("scripts") if isinstance(project, dict) else None
        if isinstance(scripts, dict):
            found += [f"pyproject.toml [project.scripts] {k} = {v}" for k, v in scripts.items()]
    if "package.json" in paths:
        package = _manifest(root / "package.json", json.loads)
        if isinstance(package.get("main"), str):
            found.append(f"package.json main = {package['main']}")
        bins = package.get("bin")
        bins = {package.get("name", "bin"): bins} if isinstance(bins, str) else bins
        if isinstance(bins, dict):
            found += [f"package.json bin {k} = {v}" for k, v in bins.items()]
    return found


REPOSITORY_TOOLSET: FunctionToolset[RepoDeps] = FunctionToolset(id="repository")
"""The built-in repository tools; pydantic-ai runs these sync functions in a worker thread."""


@REPOSITORY_TOOLSET.tool
def repository_info(ctx: RunContext[RepoDeps]) -> dict[str, Any]:
    """Summarize the repository: size, languages, top-level entries, README, entry points, tests.

    Call this first to get oriented before listing or reading files.
    """
    root = ctx.deps.root
    files = _files(ctx, ".")
    paths = [rel for rel, _ in files]
    top = [
        entry.name + "/" if entry.is_dir() else entry.name
        for entry in sorted(root.iterdir())
        if not entry.name.startswith(".") and entry.name not in _SKIP_DIRS
        if not entry.is_symlink() or _inside(root, entry)
    ]
    readmes = [p for p in paths if "/" not in p and p.lower().startswith("readme")]
    languages = Counter(_language(p) for p in paths)
    return {
        "name": ctx.deps.repository,
        "file_count": len(paths),
        "total_bytes": sum(path.stat().st_size for _, path in files),
        "languages": dict(sorted(languages.items(), key=lambda item: (-item[1], item[0]))),
        "top_level": top,
        "readme": min(readmes, key=lambda p: (not p.lower().endswith(".md"), p), default=None),
        "entry_points": _entry_points(root, paths),
        "test_files": sum(is_test_path(p) for p in paths),
    }


@REPOSITORY_TOOLSET.tool
def list_files(ctx: RunContext[RepoDeps], directory: str = ".", pattern: str = "*") -> list[str]:
    """List the files under a directory, recursively, as repository-relative paths.

    Hidden, dependency and build directories are skipped. At most 1000 paths are returned;
    then the last entry says how many were left out.

    Args:
        ctx: The run context.
        directory: A directory relative to the repository root; `.` is the root.
        pattern: A shell-style pattern the file name must match, e.g. `*.py` or `test_*`.
    """
    names = [rel for rel, path in _files(ctx, directory) if fnmatch.fnmatch(path.name, pattern)]
    if len(names) > _MAX_LISTED:
        left_out = len(names) - _MAX_LISTED
        return [*names[:_MAX_LISTED], f"... {left_out} more files not listed; narrow the directory"]
    return names


@REPOSITORY_TOOLSET.tool
def read_file(
    ctx: RunContext[RepoDeps], path: str, start_line: int = 1, max_lines: int = 400
) -> str:
    """Read lines of a text file, as plain text (at most 64 KiB per call).

    Args:
        ctx: The run context.
        path: The file, relative to the repository root.
        start_line: The first line to return, counting from 1.
        max_lines: How many lines to return at most.
    """
    target = _safe_path(ctx.deps.root, path)
    if target.is_dir():
        raise ModelRetry(f"`{path}` is a directory; use list_files(directory={path!r}) instead.")
    if not target.is_file():
        raise ModelRetry(f"`{path}` does not exist; use list_files to see which files exist.")
    if start_line < 1 or max_lines < 1:
        raise ModelRetry("start_line and max_lines must both be at least 1.")
    if _is_binary(target):
        return f"[`{path}` is a binary file ({target.stat().st_size} bytes); it has no text]"
    with target.open("rb") as handle:
        for _ in range(start_line - 1):
            handle.readline()
        text = _read_window(handle, path, start_line, max_lines)
    return text or f"[`{path}` has fewer than {start_line} lines]"


def _read_window(handle: BinaryIO, path: str, start_line: int, max_lines: int) -> str:
    """Up to `max_lines` lines from `handle` within the byte cap, a note line when cut short."""
    out: list[str] = []
    size, invalid, budget = 0, False, _MAX_READ_BYTES - 200  # room for a note
    for number in range(start_line, start_line + max_lines):
        raw = handle.readline(budget + 1)  # bounded, even for a file that is one huge line
        if not raw:
            break
        if size + len(raw) > budget:
            if not out:  # one line longer than the cap: show its start, then skip it
                out.append(raw[:budget].decode("utf-8", "ignore") + "\n")
                number += 1
            return "".join(out) + (
                f"[truncated at 64 KiB; call read_file(path={path!r}, start_line={number}) "
                "to read on]"
            )
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(raw.decode("utf-8", "replace"))
            invalid = True
        size += len(raw)
    if invalid:
        end = "" if out[-1].endswith("\n") else "\n"
        out.append(f"{end}[not valid UTF-8; undecodable bytes are shown as \ufffd]")
    return "".join(out)


@REPOSITORY_TOOLSET.tool
def search_code(
    ctx: RunContext[RepoDeps], query: str, directory: str = ".", max_results: int = 50
) -> list[str]:
    """Find lines containing a text, case-insensitively (a literal text, not a regex).

    Binary files and files over 1 MiB are skipped. Results are `path:line: text`, in path order.

    Args:
        ctx: The run context.
        query: The text to look for, e.g. a function name.
        directory: A directory relative to the repository root to search in; `.` is all of it.
        max_results: How many matching lines to return at most.
    """
    needle = query.strip().casefold()
    if not needle or max_results < 1:
        raise ModelRetry("Give a non-empty query and max_results of at least 1.")
    hits: list[str] = []
    for rel, path in _files(ctx, directory):
        if path.stat().st_size > _MAX_SCANNED_BYTES or _is_binary(path):
            continue
        for number, line in enumerate(path.read_text("utf-8", "replace").splitlines(), start=1):
            if needle in line.casefold():
                if len(hits) == max_results:
                    return [*hits, "... more matches not shown; narrow the query or directory"]
                hits.append(f"{rel}:{number}: {line.strip()[:200]}")
    return hits


@REPOSITORY_TOOLSET.tool
def code_outline(ctx: RunContext[RepoDeps], path: str) -> dict[str, Any]:
    """Outline a source file: for Python, every class, function and method with its size.

    Each definition has its line span, nesting depth, parameters, signature, docstring line,
    whether it is public, and the long blocks (5+ lines) of its body.

    Args:
        ctx: The run context.
        path: The file, relative to the repository root.
    """
    target = _safe_path(ctx.deps.root, path)
    if not target.is_file():
        raise ModelRetry(f"`{path}` is not a file; use list_files to see which files exist.")
    path, language = PurePosixPath(path).as_posix(), _language(path).lower()
    if target.stat().st_size > _MAX_SCANNED_BYTES:
        return {"path": path, "language": language, "error": "the file is over 1 MiB"}
    text = target.read_text("utf-8", "replace")
    if language != "python":
        return {"path": path, "language": language, "lines": len(text.splitlines())}
    try:
        body = ast.parse(text).body
    except (SyntaxError, ValueError) as exc:
        return {"path": path, "language": language, "error": f"cannot parse: {exc}"}
    lines = len(text.splitlines())
    definitions = list(_definitions(body, prefix="", public=True))
    return {"path": path, "language": language, "lines": lines, "definitions": definitions}


def _definitions(body: list[ast.stmt], prefix: str, public: bool) -> Iterator[dict[str, Any]]:
    for node in body:
        if isinstance(node, _Definition):
            kind = "class" if isinstance(node, ast.ClassDef) else "method" if prefix else "function"
            yield _describe(node, kind, prefix, public)
        if isinstance(node, ast.ClassDef):
            inner_public = public and not node.name.startswith("_")
            yield from _definitions(node.body, f"{prefix}{node.name}.", inner_public)


def _describe(node: _Definition, kind: str, prefix: str, public: bool) -> dict[str, Any]:
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
