"""A request payload that does not parse ends with INVALID_ARGUMENT, not grpc's UNKNOWN.

grpc parses a request before any handler runs and answers a payload its deserializer rejects
(corrupt wire format, nesting past protobuf's recursion limit) with UNKNOWN, "Unexpected
DecodeError", as if the server had a bug, and without counting or logging the call. Here the
deserializer hands back an `_Undecodable` marker instead, and the call ends with INVALID_ARGUMENT
saying what did not parse. Interceptors outside this one (metrics, auth) see the marker as the
request and pass it on; the ones inside (the cache) and the servicers only see parsed messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

from ._handlers import Context, Deserializer, Handler, Next, WrappingInterceptor, wrap_handler


@dataclass(frozen=True)
class _Undecodable:
    """A request payload the method's deserializer rejected."""

    error: DecodeError


class DecodingInterceptor(WrappingInterceptor):
    """Ends calls whose request payload does not parse with INVALID_ARGUMENT."""

    def covers(self, method: str, handler: Handler) -> bool:
        """Every handler that parses its requests."""
        return handler.request_deserializer is not None

    def wrap(self, method: str, handler: Handler) -> Handler:
        """Parse with a deserializer that marks bad payloads instead of raising."""
        assert handler.request_deserializer is not None
        check = _check_each if handler.request_streaming else _check
        return wrap_handler(handler, check, deserializer=_tolerant(handler.request_deserializer))


def _tolerant(deserializer: Deserializer) -> Deserializer:
    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError as exc:
            return _Undecodable(exc)

    return deserialize


async def _check(request: Any, context: Context, call_next: Next) -> Any:
    if isinstance(request, _Undecodable):
        await _reject(request, context)
    return await call_next(request, context)


async def _check_each(requests: AsyncIterator[Any], context: Context, call_next: Next) -> Any:
    async def checked() -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, _Undecodable):
                await _reject(request, context)
            yield request

    return await call_next(checked(), context)


async def _reject(request: _Undecodable, context: Context) -> NoReturn:
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT, f"the request does not parse ({request.error})"
    )
    raise AssertionError("abort() raises")  # pragma: no cover
