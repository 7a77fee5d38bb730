"""The built-in repository tools: read-only, and never outside the repository (`_sandbox.py`)."""

from __future__ import annotations

import fnmatch
import json
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from pydantic_ai import ModelRetry, RunContext
from pydantic_ai.toolsets import FunctionToolset

from ._outline import python_definitions
from ._sandbox import (
    is_inside,
    is_skipped,
    repository_name_problem,
    resolve_repository,
    safe_path,
    walk_files,
)

__all__ = [
    "REPOSITORY_TOOLSET",
    "RepoDeps",
    "is_test_path",
    "repository_name_problem",
    "resolve_repository",
]

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


@dataclass(frozen=True)
class RepoDeps:
    """The pydantic-ai `deps` of every run: which repository the tools may read, and until when."""

    repository: str
    """The repository name, as the caller gave it."""
    root: Path
    """The resolved repository directory; no tool reads outside it."""
    deadline: float | None = None
    """The caller's deadline (event-loop time), if any: model retries never wait past it."""


def is_test_path(path: str) -> bool:
    """Whether a repository-relative path looks like a test file."""
    name = PurePosixPath(path).name
    stem = name.split(".")[0]
    markers = (".test.", ".spec.")
    return stem.startswith("test_") or stem.endswith("_test") or any(m in name for m in markers)


def _language(path: str) -> str:
    return _LANGUAGES.get(PurePosixPath(path).suffix.lower(), "Other")


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
    files = walk_files(root, ".")
    paths = [rel for rel, _ in files]
    top = [
        entry.name + "/" if entry.is_dir() else entry.name
        for entry in sorted(root.iterdir())
        if not is_skipped(entry.name)
        if not entry.is_symlink() or is_inside(root, entry)
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
    files = walk_files(ctx.deps.root, directory)
    names = [rel for rel, path in files if fnmatch.fnmatch(path.name, pattern)]
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
    target = safe_path(ctx.deps.root, path)
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
            if not handle.readline():  # past the end: stop, whatever start_line the model sent
                return f"[`{path}` has fewer than {start_line} lines]"
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
    for rel, path in walk_files(ctx.deps.root, directory):
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
    target = safe_path(ctx.deps.root, path)
    if not target.is_file():
        raise ModelRetry(f"`{path}` is not a file; use list_files to see which files exist.")
    path, language = PurePosixPath(path).as_posix(), _language(path).lower()
    if target.stat().st_size > _MAX_SCANNED_BYTES:
        return {"path": path, "language": language, "error": "the file is over 1 MiB"}
    text = target.read_text("utf-8", "replace")
    lines = len(text.splitlines())
    if language != "python":
        return {"path": path, "language": language, "lines": lines}
    try:
        definitions = python_definitions(text)
    except (SyntaxError, ValueError) as exc:
        return {"path": path, "language": language, "error": f"cannot parse: {exc}"}
    return {"path": path, "language": language, "lines": lines, "definitions": definitions}
