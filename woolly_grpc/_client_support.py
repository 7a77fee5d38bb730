"""The client's plumbing: the retry policy, run options, and streams that survive a dropped link.

Retries. The channel carries a gRPC service config whose `retryPolicy` retries UNAVAILABLE for
the idempotent reads only (GetRun, ListAgentTypes, GetAgent, ListAgents, GetServerStatus): asking
twice changes nothing. Execute, StreamExecute, ExecuteChain and RetryRun are *not* retried
blindly: UNAVAILABLE does not say whether the server had already started the run, and a second
attempt would start a second run (a second model bill, and a second answer if the cache is
bypassed). Streams instead resume the run they already have with `WatchRun(after_sequence)`
(`follow_run`), which never reruns anything; a unary Execute that fails with UNAVAILABLE is the
caller's decision to repeat (or use a stream, or `detach` and GetRun).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypedDict

import grpc
from grpc import aio

from ._gen.woolly.v1 import agent_pb2, agent_service_pb2, run_pb2

SERVICE = "woolly.v1.AgentService"
RETRIED_METHODS = ("GetRun", "ListAgentTypes", "GetAgent", "ListAgents", "GetServerStatus")
"""Idempotent reads: retried on UNAVAILABLE by the channel itself."""

SERVICE_CONFIG: dict[str, Any] = {
    "methodConfig": [
        {
            "name": [{"service": SERVICE, "method": method} for method in RETRIED_METHODS],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.1s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.enable_retries", 1),
    ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
]
"""Options of every channel a WoollyClient opens."""

RESUMABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
"""Errors of a stream that mean the link broke, not the run: resume with WatchRun."""

Event = agent_service_pb2.WatchRunResponse
"""Every run's stream, read as WatchRunResponse: a wire-compatible superset of the
StreamExecute and ExecuteChain messages, so one reader handles every run."""


@dataclass(frozen=True)
class SavedAgent:
    """A saved agent (see `WoollyClient.create_agent`) as a step of `chain`."""

    id: str


class RunOptionsArgs(TypedDict, total=False):
    """Keywords of `WoollyClient.execute`, `stream` and `chain` that make the `RunOptions`."""

    cache_policy: str | int
    """`bypass`, `refresh` or `only_if_cached`; unset reads and writes the cache."""
    cache_ttl: float | timedelta
    """How long a fresh result stays cached (seconds)."""
    cache_max_age: float | timedelta
    """Accept only a cached result younger than this (seconds)."""
    detach: bool
    """Keep the run going after the caller leaves (then `get_run` / `watch_run`)."""


def run_options(
    *,
    cache_policy: str | int | None = None,
    cache_ttl: float | timedelta | None = None,
    cache_max_age: float | timedelta | None = None,
    detach: bool = False,
) -> agent_pb2.RunOptions:
    """`RunOptions` from keywords.

    Args:
        cache_policy: `bypass`, `refresh`, `only_if_cached` (or the enum name or value);
            None reads and writes the cache.
        cache_ttl: How long a fresh result stays cached (seconds or a timedelta).
        cache_max_age: Accept only a cached entry younger than this.
        detach: Keep the run going after the caller leaves.

    Raises:
        ValueError: for an unknown cache policy.
    """
    options = agent_pb2.RunOptions(detach=detach)
    if isinstance(cache_policy, int):
        options.cache_policy = agent_pb2.CachePolicy.ValueType(cache_policy)
    elif cache_policy is not None:
        name = cache_policy.upper().removeprefix("CACHE_POLICY_")
        try:
            options.cache_policy = agent_pb2.CachePolicy.Value(f"CACHE_POLICY_{name}")
        except ValueError:
            raise ValueError(f"unknown cache policy {cache_policy!r}") from None
    for field, value in (("cache_ttl", cache_ttl), ("cache_max_age", cache_max_age)):
        if value is not None:
            delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
            getattr(options, field).FromTimedelta(delta)
    return options


def open_stream(
    channel: aio.Channel, method: str, request: Any, **call: Any
) -> aio.UnaryStreamCall[Any, Event]:
    """Start a run's stream (`StreamExecute` or `ExecuteChain`) reading WatchRunResponse."""
    callable_ = channel.unary_stream(
        f"/{SERVICE}/{method}",
        request_serializer=type(request).SerializeToString,
        response_deserializer=Event.FromString,
    )
    return callable_(request, **call)


async def follow_run(
    start: Callable[[], aio.UnaryStreamCall[Any, Event]],
    watch: Callable[[str, int, float | None], aio.UnaryStreamCall[Any, Event]],
    ready: Callable[[], Awaitable[None]],
    *,
    timeout: float | None = None,
    max_resumes: int = 5,
    ready_timeout: float = 30.0,
) -> AsyncIterator[Event]:
    """Yield a run's events exactly once, resuming with WatchRun when the link drops.

    Args:
        start: Starts the run's stream.
        watch: `watch(run_id, after_sequence, timeout)` starts a WatchRun.
        ready: Returns an awaitable that completes when the channel is connected again.
        timeout: Deadline of the whole stream, resumes included (None = none).
        max_resumes: Give up (raise the error) after this many resumes without progress.
        ready_timeout: How long to wait for the server to be reachable again, per resume.

    Raises:
        aio.AioRpcError: any error but a dropped link, a drop before the run id was known, or a
            drop after `max_resumes` resumes in a row without a new event. A run that failed or
            was cancelled while it was followed by WatchRun raises the error its own stream
            would have ended with (WatchRun reports it as a `failed` / `cancelled` event).
    """
    loop_time = asyncio.get_running_loop().time
    deadline = None if timeout is None else loop_time() + timeout
    run_id, last, failures = "", 0, 0
    call = start()
    while True:
        try:
            async for message in call:
                if message.sequence <= last:
                    continue  # already seen before the drop: never twice
                run_id, last, failures = message.run_id, message.sequence, 0
                if (ending := _ending_error(message)) is not None:
                    raise ending
                yield message
            return
        except aio.AioRpcError as error:
            if error.code() not in RESUMABLE_CODES or not run_id or failures >= max_resumes:
                raise
            failures += 1
        finally:
            call.cancel()
        remaining = None if deadline is None else max(deadline - loop_time(), 0.0)
        wait = ready_timeout if remaining is None else min(ready_timeout, remaining)
        try:
            await asyncio.wait_for(ready(), wait)
        except TimeoutError:
            pass  # the WatchRun below then fails, counted against max_resumes
        call = watch(run_id, last, None if deadline is None else max(deadline - loop_time(), 0.0))


def _ending_error(message: Event) -> aio.AioRpcError | None:
    """The status a run's own stream ends with, for WatchRun's `failed` / `cancelled` events."""
    kind = message.WhichOneof("event")
    if kind == "failed":
        code = next((c for c in grpc.StatusCode if c.value[0] == message.failed.code), None)
        return aio.AioRpcError(code or grpc.StatusCode.UNKNOWN, details=message.failed.message)
    if kind == "cancelled":
        reason = run_pb2.CancelReason.Name(message.cancelled.reason)
        return aio.AioRpcError(grpc.StatusCode.CANCELLED, details=f"run cancelled ({reason})")
    return None
