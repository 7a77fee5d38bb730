"""Core exceptions → gRPC status (code, message, google.rpc details), in one table."""

from __future__ import annotations

import logging
from datetime import timedelta
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc import aio
from grpc_status import rpc_status

from .api import SERVICE_NAME
from .core import (
    AlreadyExists,
    FailedPrecondition,
    InvalidInput,
    LimitExceeded,
    NotFound,
    OutOfRange,
    Overloaded,
    QuotaExhausted,
    Unavailable,
)
from .store import StoreError

_log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1_024
MAX_VIOLATION_BYTES = 2_048
"""A status travels in trailing metadata, which clients refuse beyond 8 KiB by default
(`grpc.max_metadata_size`; the message is percent-encoded, the details base64-encoded). Messages
and field violations that quote request fields are cut to these sizes (UTF-8), so that a huge
field never turns the real answer into the client's RESOURCE_EXHAUSTED "received metadata size
exceeds soft limit"."""

_STORE_UNREACHABLE = "the shared store of runs and cached results is unreachable; try again shortly"

# The first matching class wins, so subclasses come before their bases.
_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (QuotaExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (NotImplementedError, grpc.StatusCode.UNIMPLEMENTED),
    (StoreError, grpc.StatusCode.UNAVAILABLE),
]


def to_status(exc: BaseException, run_id: str = "") -> status_pb2.Status:
    """The google.rpc.Status a caller gets for `exc`; unknown exceptions become INTERNAL."""
    code = next((code for cls, code in _CODES if isinstance(exc, cls)), None)
    if code is None:
        # A bug: the caller gets an id to quote, the traceback stays in our log.
        _log.error("unexpected error in run %s", run_id or "-", exc_info=exc)
        where = f" (run {run_id})" if run_id else ""
        return status_pb2.Status(code=code_pb2.INTERNAL, message=f"internal error{where}")
    # A store error names where the store is (for the log); callers learn only what failed.
    said = _STORE_UNREACHABLE if isinstance(exc, StoreError) else str(exc)
    status = status_pb2.Status(code=code.value[0], message=_cut(said, MAX_MESSAGE_BYTES))
    if isinstance(exc, InvalidInput):
        _pack(status, _bad_request(exc))
    retry_after_s = exc.retry_after_s if isinstance(exc, Overloaded | Unavailable) else None
    if retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(seconds=retry_after_s))
        _pack(status, error_details_pb2.RetryInfo(retry_delay=delay))
    return status


def refusal(code: grpc.StatusCode, message: str, reason: str, **metadata: str) -> status_pb2.Status:
    """A call refused before any core work (auth), with a `google.rpc.ErrorInfo`.

    `reason` is a constant clients may branch on (UPPER_SNAKE_CASE); the domain is the service.
    """
    status = status_pb2.Status(code=code.value[0], message=_cut(message, MAX_MESSAGE_BYTES))
    info = error_details_pb2.ErrorInfo(reason=reason, domain=SERVICE_NAME, metadata=metadata)
    _pack(status, info)
    return status


def _bad_request(exc: InvalidInput) -> error_details_pb2.BadRequest:
    """The violations as a BadRequest, as many as fit in MAX_VIOLATION_BYTES (at least one)."""
    detail, room = error_details_pb2.BadRequest(), MAX_VIOLATION_BYTES
    for v in exc.violations:
        field, description = _cut(v.field, 256), _cut(v.description, 512)
        room -= len(field.encode()) + len(description.encode()) + 8  # with protobuf's framing
        if room < 0 and detail.field_violations:
            break
        detail.field_violations.add(field=field, description=description)
    return detail


def _cut(text: str, limit: int) -> str:
    """`text`, cut to at most `limit` UTF-8 bytes (and marked so) if it is longer."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode(errors="ignore") + "…"


def _pack(status: status_pb2.Status, detail: Message) -> None:
    packed = any_pb2.Any()
    packed.Pack(detail)
    status.details.append(packed)


async def abort(
    context: aio.ServicerContext[Any, Any],
    status: status_pb2.Status,
    trailers: tuple[tuple[str, str], ...] = (),
) -> None:
    """End the call with `status`, and these trailers too (raises grpc's AbortError)."""
    grpc_status = rpc_status.to_status(status)
    if trailers:
        grpc_status = grpc_status._replace(  # type: ignore[attr-defined]  # a namedtuple
            trailing_metadata=(*grpc_status.trailing_metadata, *trailers)
        )
    await context.abort_with_status(grpc_status)


class map_core_errors:
    """Turn an exception raised inside the block into the call's gRPC status (and abort).

    Its `__aexit__` never swallows, so type checkers know the block either completes or raises.
    """

    def __init__(self, context: aio.ServicerContext[Any, Any], run_id: str = "") -> None:
        self.context = context
        self.run_id = run_id

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, Exception) and not isinstance(exc, aio.AbortError):
            await abort(self.context, to_status(exc, self.run_id))
