"""The built-in repository tools: read-only, on the repository's own regular files only.

What they may read is decided in `_sandbox.py`: never outside the repository, never VCS
internals or files that usually hold secrets, never FIFOs, devices or hard-linked files.
"""

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
    RepoFile,
    UnreadableFile,
    is_inside,
    is_skipped,
    open_file,
    open_regular,
    repository_name_problem,
    resolve_repository,
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
_MAX_PATTERN_CHARS = 200
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


def _is_binary(head: bytes) -> bool:
    return b"\x00" in head[: 8 * 1024]


def _read_scanned(file: RepoFile) -> bytes | None:
    """The bytes of a walked file, if it is still a readable regular file of at most 1 MiB."""
    if file.size > _MAX_SCANNED_BYTES:
        return None
    try:
        with open_regular(file.path) as handle:
            data = handle.read(_MAX_SCANNED_BYTES + 1)
    except (OSError, UnreadableFile):  # gone or replaced since the walk: skip it
        return None
    return data if len(data) <= _MAX_SCANNED_BYTES else None


def _manifest(file: RepoFile | None, parse: Callable[[str], Any]) -> dict[str, Any]:
    """A parsed pyproject.toml or package.json; empty when missing, unreadable or malformed."""
    data = _read_scanned(file) if file is not None else None
    try:
        parsed = parse(data.decode("utf-8")) if data is not None else None
    except ValueError:  # includes TOML, JSON and UTF-8 decode errors
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _entry_points(files: dict[str, RepoFile]) -> list[str]:
    paths = list(files)
    found = [p for p in paths if PurePosixPath(p).name in _ENTRY_NAMES]
    found += [name for name in ("Makefile", "Dockerfile") if name in files]
    if "pyproject.toml" in files:  # walked files hold no symlink out of the root
        project = _manifest(files["pyproject.toml"], tomllib.loads).get("project")
        scripts = project.get("scripts") if isinstance(project, dict) else None
        if isinstance(scripts, dict):
            found += [f"pyproject.toml [project.scripts] {k} = {v}" for k, v in scripts.items()]
    if "package.json" in files:
        package = _manifest(files["package.json"], json.loads)
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
    files = {file.rel: file for file in walk_files(root, ".")}
    top = [
        entry.name + "/" if entry.is_dir() else entry.name
        for entry in sorted(root.iterdir())
        if not is_skipped(entry.name)
        if (entry.is_dir() and is_inside(root, entry)) or entry.name in files
    ]
    readmes = [p for p in files if "/" not in p and p.lower().startswith("readme")]
    languages = Counter(_language(p) for p in files)
    return {
        "name": ctx.deps.repository,
        "file_count": len(files),
        "total_bytes": sum(file.size for file in files.values()),
        "languages": dict(sorted(languages.items(), key=lambda item: (-item[1], item[0]))),
        "top_level": top,
        "readme": min(readmes, key=lambda p: (not p.lower().endswith(".md"), p), default=None),
        "entry_points": _entry_points(files),
        "test_files": sum(is_test_path(p) for p in files),
    }


@REPOSITORY_TOOLSET.tool
def list_files(ctx: RunContext[RepoDeps], directory: str = ".", pattern: str = "*") -> list[str]:
    """List the files under a directory, recursively, as repository-relative paths.

    Hidden, dependency and build directories are skipped, and so are files that usually hold
    secrets (`.env`, keys). At most 1000 paths are returned; then the last entry says how many
    were left out.

    Args:
        ctx: The run context.
        directory: A directory relative to the repository root; `.` is the root.
        pattern: A shell-style pattern the file name must match, e.g. `*.py` or `test_*`.
    """
    if len(pattern) > _MAX_PATTERN_CHARS:
        raise ModelRetry(f"The pattern is over {_MAX_PATTERN_CHARS} characters; use e.g. `*.py`.")
    files = walk_files(ctx.deps.root, directory)
    names = [f.rel for f in files if fnmatch.fnmatch(PurePosixPath(f.rel).name, pattern)]
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
    if start_line < 1 or max_lines < 1:
        raise ModelRetry("start_line and max_lines must both be at least 1.")
    handle, size = open_file(ctx.deps.root, path)
    with handle:
        if _is_binary(handle.read(8 * 1024)):
            return f"[`{path}` is a binary file ({size} bytes); it has no text]"
        handle.seek(0)
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
    for file in walk_files(ctx.deps.root, directory):
        data = _read_scanned(file)
        if data is None or _is_binary(data):
            continue
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
            if needle in line.casefold():
                if len(hits) == max_results:
                    return [*hits, "... more matches not shown; narrow the query or directory"]
                hits.append(f"{file.rel}:{number}: {line.strip()[:200]}")
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
    handle, size = open_file(ctx.deps.root, path)
    path, language = PurePosixPath(path).as_posix(), _language(path).lower()
    with handle:
        if size > _MAX_SCANNED_BYTES:
            return {"path": path, "language": language, "error": "the file is over 1 MiB"}
        text = handle.read(_MAX_SCANNED_BYTES).decode("utf-8", "replace")
    lines = len(text.splitlines())
    if language != "python":
        return {"path": path, "language": language, "lines": lines}
    try:
        definitions = python_definitions(text)
    except (SyntaxError, ValueError) as exc:
        return {"path": path, "language": language, "error": f"cannot parse: {exc}"}
    return {"path": path, "language": language, "lines": lines, "definitions": definitions}
