"""Wrap an RpcMethodHandler with one behaviour: the only place that knows handler plumbing.

Every wrapped handler becomes one coroutine: unary calls return their response, streaming calls
write their messages with `context.write` (driving an async generator from inside, so that a
client cancel arrives as CancelledError rather than GeneratorExit). Serializers pass bytes
through, so a behaviour may answer with stored, already-serialized responses. All four
cardinalities are handled; for request-streaming methods the behaviour gets the request
iterator where a unary method's behaviour gets the request.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc
from grpc import aio

PROBE_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")
"""Method prefixes of probes and tooling: open without a key, logged at DEBUG."""

Context: TypeAlias = aio.ServicerContext[Any, Any]
Next: TypeAlias = Callable[[Any, Context], Awaitable[Any]]
"""Runs the wrapped handler; for streams its messages are written and it returns None."""
Behaviour: TypeAlias = Callable[[Any, Context, Next], Awaitable[Any]]
Serializer: TypeAlias = Callable[[Any], bytes]
Deserializer: TypeAlias = Callable[[bytes], Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only in the type stubs

_MAKERS: dict[tuple[bool, bool], Callable[..., Handler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def wrap_handler(
    handler: Handler,
    behaviour: Behaviour,
    *,
    on_serialized: Callable[[bytes], object] | None = None,
    on_deserialized: Callable[[Any], object] | None = None,
    deserializer: Deserializer | None = None,
) -> Handler:
    """A handler of the same cardinality running `behaviour(request, context, next)`.

    Args:
        handler: The handler to wrap (any cardinality).
        behaviour: The interceptor's logic; it calls `next` to run the handler, or does not.
        on_serialized: Sees every response message of the call as the bytes sent.
        on_deserialized: Sees every request message of the call once it is parsed.
        deserializer: Parses the request payloads instead of the handler's own deserializer.
    """
    inner = as_coroutine(handler)
    deserialize = deserializer or handler.request_deserializer
    if on_deserialized is not None:
        deserialize = _observed_deserializer(deserialize, on_deserialized)

    async def run(request: Any, context: Context) -> Any:
        return await behaviour(request, context, inner)

    make = _MAKERS[(handler.request_streaming, handler.response_streaming)]
    return make(
        run,
        request_deserializer=deserialize,
        response_serializer=passthrough_serializer(handler.response_serializer, on_serialized),
    )


class WrappingInterceptor(aio.ServerInterceptor):
    """An interceptor that wraps the handler of each method it covers, once per method.

    Subclasses say which methods they cover and how they wrap a handler; everything else passes
    through untouched. Wrapping on every call would cost ~5 µs a time, so each method's wrapped
    handler is made once (only methods the server serves get here, so the map is bounded).
    """

    def __init__(self) -> None:
        self._by_method: dict[str, dict[int, tuple[Handler, Handler]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        """The method's handler, wrapped if this interceptor covers it."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # type: ignore[return-value]  # grpc answers UNIMPLEMENTED
        method = handler_call_details.method
        # A method has its own handler and, from an inner interceptor, a few refusing ones.
        made_for = self._by_method.setdefault(method, {})
        made = made_for.get(id(handler))
        if made is None:  # decided again only for a new handler
            if len(made_for) >= _HANDLERS_PER_METHOD:
                made_for.clear()  # handlers made per call: keep the map bounded
            wrapped = self.wrap(method, handler) if self.covers(method, handler) else handler
            made = made_for[id(handler)] = (handler, wrapped)
        return made[1]

    def covers(self, method: str, handler: Handler) -> bool:
        """Whether to wrap this method's handler (all of them unless overridden)."""
        return True

    def wrap(self, method: str, handler: Handler) -> Handler:
        """The wrapped handler of `method` (usually `wrap_handler(handler, behaviour)`)."""
        raise NotImplementedError


def grpc_type(handler: Handler) -> str:
    """The cardinality as go-grpc-prometheus names it (`unary`, `server_stream`, …)."""
    kind = _REFUSING.get(id(handler)) or (handler.request_streaming, handler.response_streaming)
    return _TYPES[kind]


Refusal: TypeAlias = Callable[[Context], Awaitable[None]]
"""Ends a call (with `context.abort`) without looking at its request."""

_HANDLERS_PER_METHOD = 8
_REFUSING: dict[int, tuple[bool, bool]] = {}
"""The cardinality each refusing handler stands for (it reads requests as a stream)."""


def refusing_handler(handler: Handler, refuse: Refusal) -> Handler:
    """A handler for `handler`'s method that runs `refuse` without reading the request.

    grpc receives and parses a unary request before any behaviour runs, so a refusal there
    would cost the whole message (up to WOOLLY_MAX_MESSAGE_BYTES) however cheap the refusal.
    A request-streaming handler is called first and reads only when asked: the message is
    never read (only HTTP/2 flow control's window of it is ever buffered). On the wire the
    call is the same; `grpc_type` still reports the method's own cardinality.
    """

    async def run(requests: Any, context: Context) -> None:
        await refuse(context)

    make = _MAKERS[(True, handler.response_streaming)]
    refusing = make(
        run,
        request_deserializer=None,
        response_serializer=passthrough_serializer(handler.response_serializer, None),
    )
    _REFUSING[id(refusing)] = (handler.request_streaming, handler.response_streaming)
    return refusing


_TYPES = {
    (False, False): "unary",
    (False, True): "server_stream",
    (True, False): "client_stream",
    (True, True): "bidi_stream",
}


def as_coroutine(handler: Handler) -> Next:
    """The handler's behaviour as one coroutine function (see the module docstring)."""
    function = _behaviour_of(handler)
    if not inspect.isasyncgenfunction(function):
        return cast(Next, function)  # unary, write()-style stream, or an already-wrapped one

    async def drive(request: Any, context: Context) -> None:
        async with contextlib.aclosing(function(request, context)) as messages:
            async for message in messages:
                await context.write(message)

    return drive


def _behaviour_of(handler: Handler) -> Callable[..., Any]:
    if handler.request_streaming:
        function = handler.stream_stream if handler.response_streaming else handler.stream_unary
    else:
        function = handler.unary_stream if handler.response_streaming else handler.unary_unary
    return cast(Callable[..., Any], function)


def passthrough_serializer(
    serializer: Serializer | None, observe: Callable[[bytes], object] | None
) -> Serializer:
    """A serializer that sends bytes as they are and shows each message's bytes to `observe`."""

    def serialize(message: Any) -> bytes:
        raw = message if isinstance(message, bytes) or serializer is None else serializer(message)
        if observe is not None:
            observe(raw)
        return cast(bytes, raw)

    return serialize


def _observed_deserializer(
    deserializer: Deserializer | None, observe: Callable[[Any], object]
) -> Deserializer:
    def deserialize(raw: bytes) -> Any:
        message = raw if deserializer is None else deserializer(raw)
        observe(message)
        return message

    return deserialize
