"""Path safety: the repository a run may read, and every path a tool touches, kept inside it."""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path, PurePosixPath

from pydantic_ai import ModelRetry

from .exceptions import InvalidInput, NotFound

_NAME_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_SKIP_DIRS = frozenset({"node_modules", "__pycache__", ".venv", "venv", "dist", "build"})


def resolve_repository(repos_root: Path, name: str) -> Path:
    """Return the resolved directory of repository `name` under `repos_root`.

    Raises:
        InvalidInput: the name could escape the root, or its directory is a symlink out of it.
        NotFound: the name is fine but there is no such directory.
    """
    if problem := repository_name_problem(name):
        raise InvalidInput.one("repository_name", problem)
    root = repos_root.resolve()
    try:
        directory: Path | None = (root / name).resolve()  # resolved once: it runs on every call
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        directory = None
    if directory is None or directory == root or not directory.is_relative_to(root):
        raise InvalidInput.one("repository_name", "links outside the repositories root")
    if not directory.is_dir():
        raise NotFound("repository", name, hint="the repositories root has no such directory")
    return directory


def repository_name_problem(name: str) -> str | None:
    """What makes `name` unusable as a repository name (it could escape the root), or None."""
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


def safe_path(root: Path, path: str) -> Path:
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
    if not is_inside(root, root / pure):
        raise ModelRetry(f"The path {path!r} leads outside the repository through a symlink.")
    return (root / pure).resolve()


def is_inside(root: Path, path: Path) -> bool:
    """Whether `path`, symlinks followed, stays inside `root` (a symlink loop does not)."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        return False


def is_skipped(name: str) -> bool:
    """Whether the tools pass over a directory entry: hidden, dependencies or build output."""
    return name.startswith(".") or name in _SKIP_DIRS


def walk_files(root: Path, directory: str) -> list[tuple[str, Path]]:
    """The (relative path, path) of every file under `directory`, sorted, all inside `root`."""
    start = safe_path(root, directory)
    if not start.is_dir():
        raise ModelRetry(f"`{directory}` is not a directory of the repository; try `.`.")
    found = []
    for dirpath, dirnames, filenames in os.walk(start):  # never descends into symlinked dirs
        dirnames[:] = [d for d in dirnames if not is_skipped(d)]
        for name in filenames:
            path = Path(dirpath, name)
            if not path.is_symlink() or is_inside(root, path):
                found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)
