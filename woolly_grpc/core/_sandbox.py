"""Path safety: the repository a run may read, and every file a tool touches kept to it.

A tool reads only *regular files of the repository itself*: never a path out of it (by `..`,
an absolute path or a symlink), never version-control internals or a file that usually holds
secrets (`withheld`), never a FIFO, socket or device (opening a FIFO blocks), and never a file
with more than one hard link (a hard link can make `/etc/passwd` look like a repository file,
and nothing in the file says where else it is linked: such files are refused, so repositories
must be real checkouts, which have none).
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from pydantic_ai import ModelRetry

from .exceptions import InvalidInput, NotFound

_NAME_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_SKIP_DIRS = frozenset({"node_modules", "__pycache__", ".venv", "venv", "dist", "build"})
_MAX_PATH_BYTES = 1024
_MAX_NAME_BYTES = 255
"""Linux refuses a name over 255 bytes (ENAMETOOLONG); no repository path needs 1 KiB."""

_VCS_NAMES = frozenset(
    {".git", ".hg", ".svn", ".bzr", "_darcs", "cvs", ".jj", ".sl", ".pijul"}
    | {".fslckout", "_fossil_"}  # Fossil's checkout databases (files)
)
"""Version-control internals (compared lowercased: a case-insensitive disk has `.GIT` too).
`.git` is also the file a worktree or submodule has in its place."""
_SECRET_DIRS = frozenset({".ssh", ".gnupg", ".aws"})
_SECRET_FILES = frozenset({".netrc", "_netrc", ".npmrc", ".pypirc", ".pgpass", ".git-credentials"})
_SECRET_SUFFIXES = (".pem", ".key", ".p12", ".pfx")
_KEY_BACKUPS = frozenset({"bak", "old", "orig", "backup"})
_VCS_REASON = "version-control internals (.git, .hg, .svn, ...) are never read"
_SECRET_REASON = "files that usually hold secrets (.env*, keys, credentials) are never read"


@dataclass(frozen=True)
class RepoFile:
    """A file the tools may read, as a walk found it."""

    rel: str
    """The path relative to the repository root, with '/' (a symlink's own path, not its target)."""
    path: Path
    """The resolved path, to open."""
    size: int


class UnreadableFile(Exception):
    """The file is not a regular file of its own (a FIFO, device, socket, or hard-linked)."""


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


def withheld(name: str, *, is_file: bool) -> str | None:
    """Why the tools never touch an entry called `name` (None when they may).

    Any part of a path: VCS internals, `.env*`, `.ssh`, `.gnupg`, `.aws`. A file, also:
    `.netrc`, `.npmrc`, `.pypirc`, `.pgpass`, `.git-credentials`, `*.pem`, `*.key`, `*.p12`,
    `*.pfx`, and SSH private keys: `id_` names without a dot (`id_rsa`, `id_ed25519_sk`,
    `id_deploy`) or with a backup extension (`id_rsa.bak`); `id_rsa.pub` and source files such
    as `id_utils.py` stay readable.
    """
    lowered = name.lower()
    if lowered in _VCS_NAMES:
        return _VCS_REASON
    if lowered.startswith(".env") or lowered in _SECRET_DIRS:
        return _SECRET_REASON
    if not is_file:
        return None
    if lowered in _SECRET_FILES or lowered.endswith(_SECRET_SUFFIXES):
        return _SECRET_REASON
    if lowered.startswith("id_"):
        _, dot, extension = lowered.partition(".")
        if not dot or extension in _KEY_BACKUPS:
            return _SECRET_REASON
    return None


def safe_path(root: Path, path: str) -> Path:
    """Resolve a tool's path argument, refusing anything that could leave `root` or is withheld."""
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
    too_long = len(path.encode()) > _MAX_PATH_BYTES
    if too_long or any(len(part.encode()) > _MAX_NAME_BYTES for part in pure.parts):
        raise ModelRetry(  # the path itself is not quoted: it may be kilobytes long
            f"The path is too long ({len(path.encode())} bytes): paths are at most "
            f"{_MAX_PATH_BYTES} bytes and each name in them at most {_MAX_NAME_BYTES}; "
            "use list_files to see the real paths."
        )
    if pure.is_absolute() or ".." in pure.parts:
        raise ModelRetry(
            f"The path {path!r} leaves the repository; give a path relative to the repository "
            "root, without '..' or a leading '/'."
        )
    if reason := _withheld_part(pure.parts):
        raise ModelRetry(f"`{path}` is not available: {reason}.")
    try:
        resolved = (root / pure).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        resolved = None
    if resolved is None or not resolved.is_relative_to(root):
        raise ModelRetry(f"The path {path!r} leads outside the repository through a symlink.")
    if reason := _withheld_part(resolved.relative_to(root).parts):
        raise ModelRetry(f"`{path}` is not available (it links to what is not): {reason}.")
    return resolved


def _withheld_part(parts: tuple[str, ...]) -> str | None:
    """Why one of these path parts (the last may be a file or a directory) is withheld."""
    return next(filter(None, (withheld(part, is_file=False) for part in parts)), None)


def open_file(root: Path, path: str) -> tuple[BinaryIO, int]:
    """Open a tool's file argument for reading, with its size, or say what to do instead.

    Raises:
        ModelRetry: the path is refused, missing, a directory, or not a regular file of its own.
    """
    target = safe_path(root, path)
    try:
        info = target.stat()
    except OSError:  # missing, or a part of it is a file: the model's mistake either way
        raise ModelRetry(
            f"`{path}` does not exist; use list_files to see which files exist."
        ) from None
    if stat.S_ISDIR(info.st_mode):
        raise ModelRetry(f"`{path}` is a directory; use list_files(directory={path!r}) instead.")
    names = {PurePosixPath(path).name, target.name}
    if reason := next(filter(None, (withheld(n, is_file=True) for n in names)), None):
        raise ModelRetry(f"`{path}` is not available: {reason}.")
    try:
        handle = open_regular(target, info)
    except UnreadableFile as exc:
        raise ModelRetry(
            f"`{path}` {exc}; only regular files of the repository are read."
        ) from None
    except OSError as exc:
        raise ModelRetry(f"`{path}` cannot be read ({exc.strerror}).") from None
    return handle, info.st_size


def open_regular(path: Path, seen: os.stat_result | None = None) -> BinaryIO:
    """Open `path` (resolved) for reading if it is a regular file with no other hard link.

    It is opened without blocking and checked again once open, so a FIFO put in its place
    after a walk neither blocks the thread nor gets read.

    Raises:
        UnreadableFile: not a regular file, or hard-linked.
        OSError: it cannot be opened.
    """
    if seen is not None:
        _check_regular(seen)  # before opening: opening a device may do something
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        _check_regular(info)
        if seen is not None and (info.st_dev, info.st_ino) != (seen.st_dev, seen.st_ino):
            raise UnreadableFile("changed while it was being opened")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_regular(info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableFile("is not a regular file (a FIFO, socket or device)")
    if info.st_nlink > 1:
        raise UnreadableFile("has other hard links, which may be files outside the repository")


def is_inside(root: Path, path: Path) -> bool:
    """Whether `path`, symlinks followed, stays inside `root` and out of withheld directories."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        return False
    return resolved.is_relative_to(root) and not _withheld_part(resolved.relative_to(root).parts)


def is_skipped(name: str) -> bool:
    """Whether walks pass over a directory: hidden, dependencies, build output, or withheld."""
    return name.startswith(".") or name in _SKIP_DIRS or withheld(name, is_file=False) is not None


def walk_files(root: Path, directory: str) -> list[RepoFile]:
    """Every file the tools may read under `directory`, sorted by path."""
    start = safe_path(root, directory)
    if not start.is_dir():
        raise ModelRetry(f"`{directory}` is not a directory of the repository; try `.`.")
    found = []
    for dirpath, dirnames, filenames in os.walk(start):  # never descends into symlinked dirs
        dirnames[:] = [d for d in dirnames if not is_skipped(d)]
        for name in filenames:
            if withheld(name, is_file=True) is None:
                found += _repo_file(root, Path(dirpath, name))
    return sorted(found, key=lambda file: file.rel)


def _repo_file(root: Path, path: Path) -> list[RepoFile]:
    """`path` as a RepoFile ([] when the tools may not read it)."""
    try:
        info = path.lstat()
        resolved = path
        if stat.S_ISLNK(info.st_mode):
            resolved = path.resolve()
            info = resolved.stat()
    except (OSError, RuntimeError):  # gone, or a symlink loop
        return []
    if resolved is not path and (
        not is_inside(root, resolved) or withheld(resolved.name, is_file=True)
    ):
        return []
    try:
        _check_regular(info)
    except UnreadableFile:
        return []
    return [RepoFile(path.relative_to(root).as_posix(), resolved, info.st_size)]
