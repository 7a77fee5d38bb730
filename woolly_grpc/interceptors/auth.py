"""Authentication: `authorization: Bearer <key>` → the caller's tenant, for every call but probes.

Health checks and reflection stay open (kubelets and grpcurl carry no key). Every other call
needs a configured key, else it ends UNAUTHENTICATED before anything else runs; with a key, its
tenant is the call's (`calls.Call.tenant`), and so scopes cache keys, runs and saved agents.
Keys are compared in constant time, and never appear in logs, metrics or error messages: a bare
key's tenant is named after a digest of the key, not the key.

PERMISSION_DENIED is not used: every valid key may call every method, and another tenant's run
or saved agent is NOT_FOUND (so that its existence is not revealed).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from woolly_grpc import calls

from ._handlers import PROBE_METHODS, Context, Handler, Next, WrappingInterceptor, wrap_handler

_FILE_PREFIXES = ("/", "./", "../", "~/")
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_MISSING = "missing API key: send the metadata `authorization: Bearer <key>`"
_MALFORMED = "malformed authorization metadata: expected `Bearer <key>`"
_UNKNOWN = "unknown API key"


class ApiKeysError(ValueError):
    """WOOLLY_API_KEYS cannot be used; the message says why without quoting any key."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def bare_key_tenant(key: str) -> str:
    """The tenant of a key configured without one: named by a digest, never by the key."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ApiKeys:
    """The configured keys (as SHA-256 digests) and their tenants."""

    entries: tuple[tuple[bytes, str], ...]

    @classmethod
    def load(cls, value: str) -> ApiKeys:
        """Parse WOOLLY_API_KEYS: `tenant:key` / `key` entries, or the path of a file of them.

        Raises:
            ApiKeysError: the file cannot be read, or an entry is malformed or repeated.
        """
        if value.strip().startswith(_FILE_PREFIXES):
            path = Path(value.strip()).expanduser()
            try:
                text = path.read_text()
            except OSError as exc:
                raise ApiKeysError(f"cannot read the keys file {path}: {exc.strerror}") from None
            lines = [line.split("#", 1)[0] for line in text.splitlines()]
            return cls.parse(",".join(lines))
        return cls.parse(value)

    @classmethod
    def parse(cls, text: str) -> ApiKeys:
        """Parse comma-separated `tenant:key` or bare `key` entries (blank entries skipped)."""
        entries: list[tuple[bytes, str]] = []
        seen: dict[bytes, int] = {}
        for number, raw in enumerate((e.strip() for e in text.split(",") if e.strip()), 1):
            tenant, separator, key = raw.partition(":")
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
            entries.append((digest, tenant))
        if not entries:
            raise ApiKeysError("it is set but lists no keys (unset it to turn authentication off)")
        return cls(tuple(entries))

    def tenant_of(self, key: str) -> str | None:
        """The tenant of `key`, or None; every entry is compared, each in constant time."""
        digest, found = _digest(key), None
        for known, tenant in self.entries:
            if hmac.compare_digest(digest, known):
                found = tenant
        return found


class AuthInterceptor(WrappingInterceptor):
    """Turns the caller's API key into its tenant, or ends the call UNAUTHENTICATED."""

    def __init__(self, keys: ApiKeys) -> None:
        super().__init__()
        self.keys = keys

    def covers(self, method: str, handler: Handler) -> bool:
        """Every method but the open ones."""
        return not method.startswith(PROBE_METHODS)

    def wrap(self, method: str, handler: Handler) -> Handler:
        """Check the key before the handler runs."""
        return wrap_handler(handler, self._guard)

    async def _guard(self, request: Any, context: Context, call_next: Next) -> Any:
        tenant, refusal = self._identify(context.invocation_metadata() or ())
        if refusal:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, refusal)
        # Set inside the call's own behaviour (its task), whatever task grpc ran
        # intercept_service in.
        calls.current().tenant = tenant
        return await call_next(request, context)

    def _identify(self, metadata: Iterable[tuple[str, str | bytes]]) -> tuple[str, str]:
        """(tenant, "") for a known key, else ("", why the call is refused)."""
        value = next((v for k, v in metadata if k == "authorization"), None)
        if value is None:
            return "", _MISSING
        scheme, _, key = (value.decode() if isinstance(value, bytes) else value).partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return "", _MALFORMED
        tenant = self.keys.tenant_of(key.strip())
        return (tenant, "") if tenant is not None else ("", _UNKNOWN)
