"""Streams that survive a dropped link: a run's events exactly once, resumed with WatchRun."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.rpc import status_pb2
from grpc import aio

from woolly_grpc._gen.woolly.v1 import agent_service_pb2, run_pb2
from woolly_grpc.api import RUN_ENDED_TRAILER, RUN_ID_METADATA, method_path

RESUMABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
"""Errors of a stream that mean the link broke, not the run: resume with WatchRun."""

Event = agent_service_pb2.WatchRunResponse
"""Every run's stream, read as WatchRunResponse: a wire-compatible superset of the
StreamExecute and ExecuteChain messages, so one reader handles every run."""


def open_stream(
    channel: aio.Channel, method: str, request: Any, **call: Any
) -> aio.UnaryStreamCall[Any, Event]:
    """Start a run's stream (`StreamExecute` or `ExecuteChain`) reading WatchRunResponse."""
    callable_ = channel.unary_stream(
        method_path(method),
        request_serializer=type(request).SerializeToString,
        response_deserializer=Event.FromString,
    )
    return callable_(request, **call)


async def follow_run(
    start: Callable[[], aio.UnaryStreamCall[Any, Event]],
    watch: Callable[[str, int, float | None], aio.UnaryStreamCall[Any, Event]],
    ready: Callable[[], Awaitable[None]],
    *,
    run_id: str = "",
    after: int = 0,
    timeout: float | None = None,
    max_resumes: int = 5,
    ready_timeout: float = 30.0,
) -> AsyncIterator[Event]:
    """Yield a run's events exactly once, resuming with WatchRun when the link drops.

    Args:
        start: Starts the run's stream.
        run_id: The run, when known before its first event (a WatchRun).
        after: The sequence the stream starts after (a WatchRun's `after_sequence`).
        watch: `watch(run_id, after_sequence, timeout)` starts a WatchRun.
        ready: Returns an awaitable that completes when the channel is connected again.
        timeout: Deadline of the whole stream, resumes included (None = none).
        max_resumes: Give up (raise the error) after this many resumes without progress.
        ready_timeout: How long to wait for the server to be reachable again, per resume.

    A call is resumed only once the server had taken it: an event arrived, or the run id in the
    initial metadata (`woolly-run-id`, sent as soon as a run's stream starts). A call that never
    reached the server fails as it is: there is nothing to resume.

    Raises:
        aio.AioRpcError: the run's own failure or cancellation, with its status (a stream that
            ends with it says so in the `woolly-run-ended` trailer; WatchRun reports it as a
            `failed` / `cancelled` event); any error but a dropped link; a drop of a call the
            server never took; a server not reachable again within `ready_timeout`; a drop after
            `max_resumes` resumes in a row without a new event.
    """
    loop_time = asyncio.get_running_loop().time
    deadline = None if timeout is None else loop_time() + timeout
    last, failures = after, 0
    call = start()
    while True:
        ending: aio.AioRpcError | None = None
        received = False
        try:
            async for message in call:
                received = True
                if message.sequence <= last:
                    continue  # already seen before the drop: never twice
                run_id, last, failures = message.run_id, message.sequence, 0
                if (ending := _ending_error(message)) is not None:
                    break
                yield message
            else:
                return
        except aio.AioRpcError as error:
            if not _dropped(error) or failures >= max_resumes:
                raise
            taken = run_id if received else await _announced_run(call)
            if not taken:
                raise
            run_id, failures = taken, failures + 1
            lost = error
        finally:
            call.cancel()
        if ending is not None:  # outside the `try`: the run's end is no dropped link
            raise ending
        remaining = None if deadline is None else max(deadline - loop_time(), 0.0)
        wait = ready_timeout if remaining is None else min(ready_timeout, remaining)
        try:
            await asyncio.wait_for(ready(), wait)
        except TimeoutError:
            raise lost from None  # the server did not come back in time
        call = watch(run_id, last, None if deadline is None else max(deadline - loop_time(), 0.0))


async def _announced_run(call: aio.UnaryStreamCall[Any, Event]) -> str:
    """The run id the server announced in the call's initial metadata ("" if it sent none)."""
    metadata = await call.initial_metadata()
    value = dict(metadata or ()).get(RUN_ID_METADATA, "")
    return value.decode() if isinstance(value, bytes) else str(value)


_DETAILS_KEY = "grpc-status-details-bin"
"""Where gRPC carries a status's details (what `grpc_status.rpc_status.from_call` reads)."""


def _dropped(error: aio.AioRpcError) -> bool:
    """Whether the link broke (resume), as opposed to the run ending with this status."""
    trailers = error.trailing_metadata() or ()
    ended = any(key == RUN_ENDED_TRAILER for key, _ in trailers)
    return error.code() in RESUMABLE_CODES and not ended


def _ending_error(message: Event) -> aio.AioRpcError | None:
    """The status a run's own stream ends with, for WatchRun's `failed` / `cancelled` events."""
    kind = message.WhichOneof("event")
    if kind == "failed":
        failed = message.failed
        code = next((c for c in grpc.StatusCode if c.value[0] == failed.code), None)
        status = status_pb2.Status(code=failed.code, message=failed.message, details=failed.details)
        return aio.AioRpcError(
            code or grpc.StatusCode.UNKNOWN,
            aio.Metadata(),
            aio.Metadata((_DETAILS_KEY, status.SerializeToString())),
            details=failed.message,
        )
    if kind == "cancelled":
        reason = run_pb2.CancelReason.Name(message.cancelled.reason)
        return aio.AioRpcError(grpc.StatusCode.CANCELLED, details=f"run cancelled ({reason})")
    return None
