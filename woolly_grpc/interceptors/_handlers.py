"""Wrap an RpcMethodHandler with one behaviour: the only place that knows handler plumbing.

Every wrapped handler becomes one coroutine: unary calls return their response, streaming calls
write their messages with `context.write` (driving an async generator from inside, so that a
client cancel arrives as CancelledError rather than GeneratorExit). Serializers pass bytes
through, so a behaviour may answer with stored, already-serialized responses.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc
from grpc import aio

Context: TypeAlias = aio.ServicerContext[Any, Any]
Next: TypeAlias = Callable[[Any, Context], Awaitable[Any]]
"""Runs the wrapped handler; for streams its messages are written and it returns None."""
Behaviour: TypeAlias = Callable[[Any, Context, Next], Awaitable[Any]]
Serializer: TypeAlias = Callable[[Any], bytes]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only in the type stubs


def wrap_unary_request(
    handler: Handler,
    behaviour: Behaviour,
    *,
    on_serialized: Callable[[bytes], None] | None = None,
) -> Handler:
    """A handler running `behaviour(request, context, next)` for a unary-request method.

    Args:
        handler: The handler to wrap (unary-unary or unary-stream).
        behaviour: The interceptor's logic; it calls `next` to run the handler, or does not.
        on_serialized: Sees every response message of the call as the bytes sent.
    """
    inner = as_coroutine(handler)
    serialize = passthrough_serializer(handler.response_serializer, on_serialized)

    async def run(request: Any, context: Context) -> Any:
        return await behaviour(request, context, inner)

    make = (
        grpc.unary_stream_rpc_method_handler
        if handler.response_streaming
        else grpc.unary_unary_rpc_method_handler
    )
    return make(
        run, request_deserializer=handler.request_deserializer, response_serializer=serialize
    )


def as_coroutine(handler: Handler) -> Next:
    """The handler's behaviour as one coroutine function (see the module docstring)."""
    function = handler.unary_stream if handler.response_streaming else handler.unary_unary
    if not inspect.isasyncgenfunction(function):
        return cast(Next, function)  # unary, or an already-wrapped stream

    async def drive(request: Any, context: Context) -> None:
        async with contextlib.aclosing(function(request, context)) as messages:
            async for message in messages:
                await context.write(message)

    return drive


def passthrough_serializer(
    serializer: Serializer | None, observe: Callable[[bytes], None] | None
) -> Serializer:
    """A serializer that sends bytes as they are and shows each message's bytes to `observe`."""

    def serialize(message: Any) -> bytes:
        raw = message if isinstance(message, bytes) or serializer is None else serializer(message)
        if observe is not None:
            observe(raw)
        return cast(bytes, raw)

    return serialize
