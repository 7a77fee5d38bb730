"""The result cache as a gRPC interceptor: a hit writes the stored response bytes straight back.

Only the methods in CACHED_METHODS are touched. A miss runs the handler, records what it sent,
and stores it once the call has succeeded (with `result.cached` set on the stored copy). Every
call reports its outcome in the `woolly-cache` trailer (hit, miss, bypass, coalesced).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from grpc import aio

from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2
from woolly_grpc.cache import CallCache, Entry, ResultCache, current_call
from woolly_grpc.core import FieldViolation, InvalidInput
from woolly_grpc.errors import abort, to_status

from ._handlers import (
    Context,
    Handler,
    Next,
    WrappedHandlers,
    passthrough_serializer,
    wrap_handler,
)

CACHE_TRAILER = "woolly-cache"
AGE_TRAILER = "woolly-cache-age-s"
_SERVICE = "/woolly.v1.AgentService/"


_AGENT_TYPE_NAMES = {value: name for name, value in agent_pb2.AgentType.items()}


def _agent_label(request: Any) -> str:
    if request.WhichOneof("agent") == "agent_id":
        return "saved_agent"
    name = _AGENT_TYPE_NAMES.get(request.agent_type, "AGENT_TYPE_UNKNOWN")
    return name.removeprefix("AGENT_TYPE_").lower()


CACHED_METHODS: Mapping[str, Callable[[Any], str]] = {
    _SERVICE + "Execute": _agent_label,
    _SERVICE + "StreamExecute": _agent_label,
    _SERVICE + "ExecuteChain": lambda _request: "chain",
}
"""The cacheable methods, each with how to name its agent in metrics."""

_RESULT_EVENTS = ("completed", "step_completed", "chain_completed")


KeyExtras = Callable[[Any], Awaitable[bytes]]
"""What else a request's answer depends on, as bytes for its key (saved agents' revisions)."""


class CacheInterceptor(aio.ServerInterceptor):
    """Answers repeated agent calls from the result cache.

    Args:
        cache: The result cache.
        key_extras: Adds to each request's key what its bytes do not say, e.g. the revisions of
            the saved agents it names, so that editing an agent never serves a stale answer.
    """

    def __init__(self, cache: ResultCache, key_extras: KeyExtras | None = None) -> None:
        self.cache = cache
        self.key_extras = key_extras
        self._wrapped = WrappedHandlers()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        """Wrap the cacheable methods' handlers; pass every other method through."""
        handler: Handler | None = await continuation(handler_call_details)
        method = handler_call_details.method
        label_of = CACHED_METHODS.get(method)
        if handler is None or label_of is None or handler.request_streaming:
            return handler  # type: ignore[return-value]  # None: grpc answers UNIMPLEMENTED
        return self._wrapped.get(method, handler, functools.partial(self._wrap, method, label_of))

    def _wrap(self, method: str, label_of: Callable[[Any], str], handler: Handler) -> Handler:
        serve = functools.partial(self._serve, method, label_of, handler)
        # Only a stream's messages are recorded; a unary miss stores the response it returns.
        record = _record_sent if handler.response_streaming else None
        return wrap_handler(handler, serve, on_serialized=record)

    async def _serve(
        self,
        method: str,
        label_of: Callable[[Any], str],
        handler: Handler,
        request: Any,
        context: Context,
        call_next: Next,
    ) -> Any:
        options: agent_pb2.RunOptions = request.options
        if options.cache_policy == agent_pb2.CACHE_POLICY_BYPASS:
            context.set_trailing_metadata(((CACHE_TRAILER, "bypass"),))
            return await call_next(request, context)
        try:
            extras = await self.key_extras(request) if self.key_extras else b""
        except Exception as exc:  # e.g. the saved-agents database is down: the call cannot run
            await abort(context, to_status(exc))
            raise
        call = CallCache(
            key=self.cache.key(method, key_payload(request), extras),
            policy=options.cache_policy,
            ttl_s=await _ttl_s(options, self.cache.default_ttl_s, context),
        )
        current_call.set(call)
        label = label_of(request)
        if call.policy != agent_pb2.CACHE_POLICY_REFRESH:
            entry = await self.cache.get(call.key)
            if entry is not None and _young_enough(entry, options, self.cache.clock()):
                self.cache.count("hit", label)
                call.outcome = "hit"
                return await self._replay(entry, handler.response_streaming, context)
        context.set_trailing_metadata(((CACHE_TRAILER, "miss"),))
        if call.policy == agent_pb2.CACHE_POLICY_ONLY_IF_CACHED:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                "no cached result for this request (cache_policy CACHE_POLICY_ONLY_IF_CACHED)",
            )
        self.cache.count("miss", label)
        try:
            response = await call_next(request, context)
            sent = call.sent
        finally:
            # The run's task keeps this CallCache (its context copied it): not these messages.
            call.sent = []
        context.set_trailing_metadata(((CACHE_TRAILER, call.outcome),))
        if handler.response_streaming:
            marked = _marked_cached(sent, streaming=True)
            if marked and _ends_with_result(marked[-1]):  # never store a stream cut short
                await self.cache.put(call.key, marked, call.ttl_s)
            return None
        raw = passthrough_serializer(handler.response_serializer, None)(response)
        await self.cache.put(call.key, _marked_cached([raw], streaming=False), call.ttl_s)
        return raw

    async def _replay(self, entry: Entry, streaming: bool, context: Context) -> bytes | None:
        age = int(entry.age_s(self.cache.clock()))
        context.set_trailing_metadata(((CACHE_TRAILER, "hit"), (AGE_TRAILER, str(age))))
        if not streaming:
            return entry.messages[0]
        for raw in entry.messages:
            await context.write(raw)
        return None


def _record_sent(raw: bytes) -> None:
    # Serializers run in the call's own task, where the cache set its CallCache.
    if (call := current_call.get()) is not None:
        call.sent.append(raw)


def key_payload(request: Message) -> bytes:
    """The request as its cache key sees it: options do not change what is asked."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("options")
    return copy.SerializeToString(deterministic=True)


_MAX_DURATION_S = 315_576_000_000
"""google.protobuf.Duration's range, about 10,000 years (timedelta cannot hold much more)."""


async def _ttl_s(options: agent_pb2.RunOptions, default: float, context: Context) -> float:
    """The TTL to store with; INVALID_ARGUMENT for a negative or malformed duration option."""
    if not (options.HasField("cache_ttl") or options.HasField("cache_max_age")):
        return default  # the usual call: nothing to check
    problems = {
        field: problem
        for field in ("cache_ttl", "cache_max_age")
        if (problem := _duration_problem(getattr(options, field)))
    }
    if problems:
        violations = [FieldViolation(f"options.{f}", p) for f, p in problems.items()]
        await abort(context, to_status(InvalidInput(violations)))
    return options.cache_ttl.ToTimedelta().total_seconds() or default


def _duration_problem(value: duration_pb2.Duration) -> str | None:
    seconds, nanos = value.seconds, value.nanos
    if abs(seconds) > _MAX_DURATION_S or abs(nanos) > 999_999_999 or seconds * nanos < 0:
        return (
            "is not a valid Duration (seconds at most 315,576,000,000, nanos at most 999,999,999, "
            "both of the same sign)"
        )
    return "must not be negative" if seconds < 0 or nanos < 0 else None


def _young_enough(entry: Entry, options: agent_pb2.RunOptions, now: float) -> bool:
    if not options.HasField("cache_max_age"):
        return True
    max_age = options.cache_max_age.ToTimedelta().total_seconds()
    return max_age <= 0 or entry.age_s(now) <= max_age


def _ends_with_result(raw: bytes) -> bool:
    last = agent_service_pb2.WatchRunResponse.FromString(raw).WhichOneof("event")
    return last in ("completed", "chain_completed")


def _marked_cached(messages: list[bytes], *, streaming: bool) -> list[bytes]:
    """The messages as stored: every result in them says `cached = true`."""
    if not streaming:
        response = agent_service_pb2.ExecuteResponse.FromString(messages[0])
        response.result.cached = True
        return [response.SerializeToString()]
    marked = []
    for raw in messages:
        # WatchRunResponse reads every stream response (they share field numbers).
        event = agent_service_pb2.WatchRunResponse.FromString(raw)
        kind = event.WhichOneof("event")
        if kind not in _RESULT_EVENTS:
            marked.append(raw)
            continue
        if kind == "completed":
            event.completed.result.cached = True
        elif kind == "step_completed":
            event.step_completed.result.cached = True
        else:
            for result in event.chain_completed.results:
                result.cached = True
        marked.append(event.SerializeToString())
    return marked
