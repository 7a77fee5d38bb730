"""Authentication: `authorization: Bearer <key>` → the caller's tenant, for every call but probes.

Health checks and reflection stay open (kubelets and grpcurl carry no key). Every other call
needs a configured key, else it ends UNAUTHENTICATED before anything else runs; with a key, its
tenant is the call's (`calls.Call.tenant`), and so scopes cache keys, runs and saved agents.
The keys themselves, their comparison in constant time and a key file followed as it changes
are in `keys.py`; keys never appear in logs, metrics or error messages.

A read-only key (`tenant:key:ro`) may run agents and read runs and saved agents; creating,
updating or deleting a saved agent with it is PERMISSION_DENIED, with a `google.rpc.ErrorInfo`
(reason `READ_ONLY_KEY`). Another tenant's run or saved agent is NOT_FOUND, never
PERMISSION_DENIED, so that its existence is not revealed.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc

from woolly_grpc import calls
from woolly_grpc.api import method_path
from woolly_grpc.errors import abort, refusal

from ._handlers import (
    PROBE_METHODS,
    Context,
    Handler,
    Next,
    WrappingInterceptor,
    refusing_handler,
    wrap_handler,
)
from .keys import Caller, KeySource

_MISSING = "missing API key: send the metadata `authorization: Bearer <key>`"
_MALFORMED = "malformed authorization metadata: expected `Bearer <key>`"
_UNKNOWN = "unknown API key"

WRITE_METHODS = frozenset(method_path(m) for m in ("CreateAgent", "UpdateAgent", "DeleteAgent"))
"""What a read-only key may not call."""
READ_ONLY_REASON = "READ_ONLY_KEY"
"""The ErrorInfo reason of a read-only key's refusal."""


class AuthInterceptor(WrappingInterceptor):
    """Turns the caller's API key into its tenant, or ends the call UNAUTHENTICATED.

    Args:
        keys: Where keys are looked up, on every call (a key file's keys change under it).
    """

    def __init__(self, keys: KeySource) -> None:
        super().__init__()
        self.keys = keys
        self._refusing: dict[tuple[str, str], Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        """The method's handler, or one refusing a call without a known key unread.

        The metadata is all a refusal needs, so a keyless caller costs a few microseconds, not
        a message received and parsed (`refusing_handler`).
        """
        handler = await super().intercept_service(continuation, handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(PROBE_METHODS):
            return handler
        caller, refused = self._identify(handler_call_details.invocation_metadata or ())
        if caller is not None:
            return handler  # its guard sets the tenant, in the call's own task
        refusing = self._refusing.get((method, refused))
        if refusing is None:

            async def refuse(context: Context) -> None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, refused)

            refusing = self._refusing[(method, refused)] = refusing_handler(handler, refuse)
        return refusing

    def covers(self, method: str, handler: Handler) -> bool:
        """Every method but the open ones."""
        return not method.startswith(PROBE_METHODS)

    def wrap(self, method: str, handler: Handler) -> Handler:
        """Check the key before the handler runs (and, for writes, that it may write)."""
        writes = method.rpartition("/")[2] if method in WRITE_METHODS else ""
        return wrap_handler(handler, functools.partial(self._guard, writes))

    async def _guard(self, writes: str, request: Any, context: Context, call_next: Next) -> Any:
        caller, refused = self._identify(context.invocation_metadata() or ())
        if caller is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, refused)
            raise AssertionError("abort() raises")  # pragma: no cover
        # Set inside the call's own behaviour (its task), whatever task grpc ran
        # intercept_service in; a refused write is then logged under its tenant.
        calls.current().tenant = caller.tenant
        if writes and caller.read_only:
            message = (
                "this API key is read-only: it may run agents and read runs and saved agents, "
                f"not call {writes}"
            )
            status = refusal(
                grpc.StatusCode.PERMISSION_DENIED, message, READ_ONLY_REASON, method=writes
            )
            await abort(context, status)
        return await call_next(request, context)

    def _identify(self, metadata: Iterable[tuple[str, str | bytes]]) -> tuple[Caller | None, str]:
        """(caller, "") for a known key, else (None, why the call is refused)."""
        value = next((v for k, v in metadata if k == "authorization"), None)
        if value is None:
            return None, _MISSING
        scheme, _, key = (value.decode() if isinstance(value, bytes) else value).partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None, _MALFORMED
        caller = self.keys.caller_of(key.strip())
        return (caller, "") if caller is not None else (None, _UNKNOWN)
