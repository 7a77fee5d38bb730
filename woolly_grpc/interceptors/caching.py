"""The result cache applied to gRPC calls: a hit writes the stored response bytes straight back.

Only the methods in CACHED_METHODS are touched. A miss runs the handler, records what it sent,
and stores it once the call has succeeded (with `result.cached` set on the stored copy). Every
call reports its outcome in the `woolly-cache` trailer (hit, miss, bypass, coalesced). The
call's key is left in its state (`calls.Call.cache_key`): identical calls in flight share one
run under it (`runs.flights`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf.message import Message

from woolly_grpc import calls
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2
from woolly_grpc.api import AGE_TRAILER, CACHE_TRAILER, agent_type_label, method_path
from woolly_grpc.cache import CachePolicy, Entry, ResultCache
from woolly_grpc.convert import merge_text_deltas
from woolly_grpc.core import Overloaded
from woolly_grpc.errors import abort, to_status
from woolly_grpc.runs import ReplaySlots

from ._handlers import (
    Context,
    Handler,
    Next,
    WrappingInterceptor,
    passthrough_serializer,
    wrap_handler,
)


def _agent_label(request: Any) -> str:
    if request.WhichOneof("agent") == "agent_id":
        return "saved_agent"
    return agent_type_label(request.agent_type)


CACHED_METHODS: Mapping[str, Callable[[Any], str]] = {
    method_path("Execute"): _agent_label,
    method_path("StreamExecute"): _agent_label,
    method_path("ExecuteChain"): lambda _request: "chain",
}
"""The cacheable methods, each with how to name its agent in metrics."""

_RESULT_EVENTS = ("completed", "step_completed", "chain_completed")

KeyExtras = Callable[[Any, str], Awaitable[bytes]]
"""What else a request's answer depends on, for its key: `extras(request, tenant)` (saved
agents' revisions)."""


class CachingInterceptor(WrappingInterceptor):
    """Answers repeated agent calls from the result cache.

    Args:
        cache: The result cache.
        key_extras: Adds to each request's key what its bytes do not say, e.g. the revisions of
            the saved agents it names, so that editing an agent never serves a stale answer.
        replays: Bounds the streamed hits replayed at once.
    """

    def __init__(
        self,
        cache: ResultCache,
        key_extras: KeyExtras | None,
        replays: ReplaySlots,
    ) -> None:
        super().__init__()
        self.cache = cache
        self.key_extras = key_extras
        self.replays = replays

    def covers(self, method: str, handler: Handler) -> bool:
        """The cacheable methods."""
        return method in CACHED_METHODS and not handler.request_streaming

    def wrap(self, method: str, handler: Handler) -> Handler:
        """Serve from the cache, or run and store; a stream's messages are recorded as sent."""
        serve = functools.partial(self._serve, method, CACHED_METHODS[method], handler)
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
        call = calls.current()
        options: agent_pb2.RunOptions = request.options
        if options.cache_policy == agent_pb2.CACHE_POLICY_BYPASS:
            call.cache_outcome = "bypass"
            context.set_trailing_metadata(((CACHE_TRAILER, "bypass"),))
            return await call_next(request, context)
        try:
            policy = CachePolicy.of(options, self.cache.default_ttl_s, self.cache.max_ttl_s)
            extras = await self.key_extras(request, call.tenant) if self.key_extras else b""
        except Exception as exc:  # a bad duration, or the saved-agents database is down
            await abort(context, to_status(exc))
            raise
        key = call.cache_key = self.cache.key(method, key_payload(request), call.tenant, extras)
        label = label_of(request)
        if policy.read:
            entry = await self.cache.get(key)
            if entry is not None and policy.accepts(entry, self.cache.clock()):
                self.cache.count("hit", label)
                call.cache_outcome = "hit"
                call.replayed = entry.messages[0]
                return await self._replay(entry, handler.response_streaming, context, call)
        call.cache_outcome = "miss"
        context.set_trailing_metadata(((CACHE_TRAILER, "miss"),))
        if policy.only_cached:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                "no cached result for this request (cache_policy CACHE_POLICY_ONLY_IF_CACHED)",
            )
        self.cache.count("miss", label)
        if handler.response_streaming:
            call.sent = []
        try:
            response = await call_next(request, context)
            sent = call.sent or []
        finally:
            call.sent = None
            if call.joined:
                call.cache_outcome = "coalesced"
        context.set_trailing_metadata(((CACHE_TRAILER, call.cache_outcome),))
        if handler.response_streaming:
            # Stored compact: every hit replays the run's text in as few messages as it can.
            marked = _marked_cached(merge_text_deltas(sent), streaming=True)
            if marked and _ends_with_result(marked[-1]):  # never store a stream cut short
                await self.cache.put(key, marked, policy.ttl_s)
            return None
        raw = passthrough_serializer(handler.response_serializer, None)(response)
        await self.cache.put(key, _marked_cached([raw], streaming=False), policy.ttl_s)
        return raw

    async def _replay(
        self, entry: Entry, streaming: bool, context: Context, call: calls.Call
    ) -> bytes | None:
        age = call.cache_age_s = int(entry.age_s(self.cache.clock()))
        context.set_trailing_metadata(((CACHE_TRAILER, "hit"), (AGE_TRAILER, str(age))))
        if not streaming:
            return entry.messages[0]
        try:
            self.replays.take()
        except Overloaded as exc:
            await abort(context, to_status(exc))
            raise
        try:
            for raw in entry.messages:
                await context.write(raw)
        finally:
            self.replays.give_back()
        return None


def _record_sent(raw: bytes) -> None:
    # Serializers run in the call's own task, where its state lives.
    if (call := calls.peek()) is not None and call.sent is not None:
        call.sent.append(raw)


def key_payload(request: Message) -> bytes:
    """The request as its cache key sees it.

    Options do not change what is asked, and an empty `context` asks what no `context` asks
    (grpcurl omits it, other clients send `{}`).
    """
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("options")
    if not getattr(copy, "context").fields:  # noqa: B009 - every cached request has one
        copy.ClearField("context")
    return copy.SerializeToString(deterministic=True)


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
