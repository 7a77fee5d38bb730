"""API keys: parsed from `WOOLLY_API_KEYS`, or followed in a file that may change at any time.

Keys are kept as SHA-256 digests with their tenant, and compared in constant time; no key ever
appears in a message, a log line or a metric. A key file is re-read when its content changes,
checked once per `poll_s` by a background task (never on a call's path), so that a rotated or
revoked key takes effect within seconds and without a restart. Kubernetes updates a mounted
secret by swapping a `..data` symlink: the file is always read through its path, so the swap
is seen like any other change.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from woolly_grpc.config import StartupError

if TYPE_CHECKING:
    from woolly_grpc.config import Settings

_log = logging.getLogger(__name__)

FILE_PREFIXES = ("/", "./", "../", "~/")
"""A `WOOLLY_API_KEYS` value starting with one of these is the path of a key file."""
READ_ONLY_SUFFIX = ":ro"
"""`tenant:key:ro`: a key that may run agents and read, but not change saved agents."""
MAX_FILE_BYTES = 1024 * 1024
"""A key file larger than this is refused (it is not a key file)."""
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class ApiKeysError(ValueError):
    """The keys cannot be used; the message says why without quoting any key."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a known key belongs to."""

    tenant: str
    read_only: bool = False
    """Whether the key may only run agents and read (no saved-agent changes)."""


class KeySource(Protocol):
    """Where the auth interceptor looks keys up."""

    def caller_of(self, key: str) -> Caller | None:
        """The caller `key` belongs to, or None for an unknown key."""
        ...


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def bare_key_tenant(key: str) -> str:
    """The tenant of a key configured without one: named by a digest, never by the key."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ApiKeys:
    """The configured keys (as SHA-256 digests) and their callers."""

    entries: tuple[tuple[bytes, Caller], ...]

    @classmethod
    def load(cls, value: str) -> ApiKeys:
        """Parse WOOLLY_API_KEYS: `tenant:key` / `key` entries, or the path of a file of them.

        Raises:
            ApiKeysError: the file cannot be read, or an entry is malformed or repeated.
        """
        if value.strip().startswith(FILE_PREFIXES):
            return cls.from_file_text(read_key_file(Path(value.strip()).expanduser()))
        return cls.parse(value)

    @classmethod
    def from_file_text(cls, text: str) -> ApiKeys:
        """Parse a key file: one or more entries a line, `#` starting a comment."""
        return cls.parse(",".join(line.split("#", 1)[0] for line in text.splitlines()))

    @classmethod
    def parse(cls, text: str) -> ApiKeys:
        """Parse comma-separated `tenant:key[:ro]` or bare `key` entries (blank ones skipped)."""
        entries: list[tuple[bytes, Caller]] = []
        seen: dict[bytes, int] = {}
        for number, raw in enumerate((e.strip() for e in text.split(",") if e.strip()), 1):
            # `:ro` marks a read-only key only after a tenant (`t:ro` is tenant t, key "ro").
            read_only = raw.endswith(READ_ONLY_SUFFIX) and raw.count(":") >= 2
            entry = raw.removesuffix(READ_ONLY_SUFFIX) if read_only else raw
            tenant, separator, key = entry.partition(":")
            if not separator:
                tenant, key = bare_key_tenant(raw), raw
            elif not _TENANT.fullmatch(tenant):
                raise ApiKeysError(
                    f"entry {number}: a tenant is 1-64 letters, digits, or . _ @ - "
                    "(starting with a letter or digit)"
                )
            if not key or any(c.isspace() for c in key):
                raise ApiKeysError(f"entry {number}: the key is empty or contains whitespace")
            digest = _digest(key)
            if digest in seen:
                raise ApiKeysError(f"entry {number} repeats the key of entry {seen[digest]}")
            seen[digest] = number
            entries.append((digest, Caller(tenant, read_only)))
        if not entries:
            raise ApiKeysError("it is set but lists no keys (unset it to turn authentication off)")
        return cls(tuple(entries))

    def caller_of(self, key: str) -> Caller | None:
        """The caller of `key`, or None; every entry is compared, each in constant time."""
        digest, found = _digest(key), None
        for known, caller in self.entries:
            if hmac.compare_digest(digest, known):
                found = caller
        return found

    def tenant_of(self, key: str) -> str | None:
        """The tenant of `key`, or None."""
        caller = self.caller_of(key)
        return caller.tenant if caller is not None else None


def read_key_file(path: Path) -> str:
    """The text of a key file.

    Raises:
        ApiKeysError: it cannot be read, is too large, or is not UTF-8.
    """
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ApiKeysError(f"cannot read the keys file {path}: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ApiKeysError(f"the keys file {path} is larger than {MAX_FILE_BYTES:,} bytes")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ApiKeysError(f"the keys file {path} is not UTF-8 text") from None


class KeyFile:
    """Keys in a file, followed: a changed file's keys replace the old ones within `poll_s`.

    The file is read (not only stat'ed) at each poll and compared by content: timestamps are
    coarse, so a rewrite of the same size within one tick would go unseen, and reading a small
    file once a second costs nothing next to the calls. A change that cannot be read or parsed
    keeps the last good keys and is logged once (as a WARNING) until the file changes again.

    Args:
        path: The key file (through any symlinks; Kubernetes swaps them).
        poll_s: How often `watch` looks at the file.

    Raises:
        ApiKeysError: the file cannot be used now (start-up must not go on without keys).
    """

    def __init__(self, path: Path, *, poll_s: float = 1.0) -> None:
        self.path = path.expanduser()
        self.poll_s = poll_s
        text = read_key_file(self.path)
        self.keys = ApiKeys.from_file_text(text)
        self._seen = _fingerprint(text)

    def caller_of(self, key: str) -> Caller | None:
        """The caller of `key` under the keys in force now."""
        return self.keys.caller_of(key)

    async def watch(self) -> None:
        """Re-read the file every `poll_s` until cancelled."""
        while True:
            await asyncio.sleep(self.poll_s)
            await self.reload()

    async def reload(self) -> bool:
        """Read the file once; returns whether the keys changed."""
        try:
            text: str | None = await asyncio.to_thread(read_key_file, self.path)
            problem = ""
        except ApiKeysError as exc:
            text, problem = None, str(exc)
        seen = _fingerprint(text) if text is not None else _fingerprint(problem, failed=True)
        if seen == self._seen:
            return False
        self._seen = seen
        if text is not None:
            try:
                keys = ApiKeys.from_file_text(text)
            except ApiKeysError as exc:
                problem = f"the keys file {self.path} is invalid: {exc}"
            else:
                self.keys = keys
                _log.info("API keys reloaded from %s (%d keys)", self.path, len(keys.entries))
                return True
        _log.warning("%s; the keys loaded before stay in force", problem)
        return False


def _fingerprint(text: str, *, failed: bool = False) -> bytes:
    """A file's content, or why it could not be read (a new reason is a new change to log)."""
    return (b"failed:" if failed else b"read:") + hashlib.sha256(text.encode()).digest()


def key_source(settings: Settings) -> KeySource | None:
    """The keys callers must present: fixed, or a key file followed as it changes."""
    name = "WOOLLY_API_KEYS_FILE" if settings.api_keys_file else "WOOLLY_API_KEYS"
    try:
        if settings.api_keys_file is not None:
            return KeyFile(settings.api_keys_file)
        if settings.api_keys is None:
            return None
        value = settings.api_keys.get_secret_value().strip()
        if value.startswith(FILE_PREFIXES):
            return KeyFile(Path(value))  # a path here is followed too: one behaviour for files
        return ApiKeys.parse(value)
    except ApiKeysError as exc:
        raise StartupError(f"cannot use {name}: {exc}") from exc
