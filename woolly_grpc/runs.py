"""Runs: every execution is a task appending numbered events to a log that any reader follows.

The RPC that starts a run is only its first reader; WatchRun is another. A run's log holds
serialized WatchRunResponse messages, which are wire-compatible with the StreamExecute and
ExecuteChain responses, so every reader handles every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from . import convert
from ._gen.woolly.v1 import agent_pb2, agent_service_pb2, run_pb2
from .core import (
    AgentType,
    ChainCompleted,
    Completed,
    Event,
    NotFound,
    Overloaded,
    StepCompleted,
    TextDelta,
    Usage,
)
from .errors import to_status

RUN_RETENTION_S = 3600.0
"""Finished runs are kept at least this long (unless `max_kept_runs` forces out the oldest)."""

EventSource = Callable[[], AsyncIterator[Event]]
"""Starts the core stream of a run (called once, inside the run's task)."""

current_run_id: ContextVar[str] = ContextVar("woolly_run_id", default="")
"""The run the current call started or joined (for its log line)."""


class RunObserver(Protocol):
    """Sees every run's life (metrics). Must not raise, and must not block."""

    def run_started(self, run: run_pb2.Run) -> None:
        """A run began executing on this replica."""

    def run_event(self, run: run_pb2.Run, event: Event) -> None:
        """A run produced an event (after it was numbered and logged)."""

    def run_ended(self, run: run_pb2.Run) -> None:
        """A run ended; `run.status`, its end time, results and usage are final."""


@dataclass
class _Run:
    record: run_pb2.Run
    request: Message
    """The request that started the run, for RetryRun."""
    log: list[bytes] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    error: status_pb2.Status | None = None
    cancel_reason: run_pb2.CancelReason.ValueType = run_pb2.CANCEL_REASON_UNSPECIFIED
    step_results: dict[int, agent_pb2.AgentResult] = field(default_factory=dict)
    step_usage: dict[int, Usage] = field(default_factory=dict)
    ended_at: float | None = None
    readers: int = 0
    """Callers following the run now; when the last one leaves, the run is abandoned."""
    flight_key: str | None = None

    @property
    def done(self) -> bool:
        return self.ended_at is not None

    def notify(self) -> None:
        # Swap before setting so that a reader waits on the event of the state it saw.
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class RunManager:
    """Starts runs, keeps their logs and records, and lets readers replay and follow them.

    Args:
        max_concurrent: Most runs executing at once; more raise Overloaded.
        max_kept_runs: Most runs kept in memory; the oldest finished ones go first.
    """

    def __init__(
        self,
        *,
        max_concurrent: int,
        max_kept_runs: int = 5_000,
        observer: RunObserver | None = None,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.observer = observer
        self.max_kept_runs = max_kept_runs
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._in_flight: dict[str, str] = {}
        """Cache key → id of the run computing it, so identical calls share one run."""
        self._active = 0
        self.closing = False
        """Set at shutdown: runs whose callers go away are then cancelled as SHUTDOWN."""

    @property
    def active(self) -> int:
        """Runs executing now."""
        return self._active

    def start(
        self,
        *,
        method: str,
        request: Message,
        repository: str,
        agent_types: list[AgentType],
        events: EventSource,
        flight_key: str | None = None,
    ) -> tuple[str, bool]:
        """Start a run in its own task; returns its id and whether it was already in flight.

        Args:
            method: The RPC that asked for it (recorded, and used by RetryRun).
            request: That RPC's request.
            repository: The repository the run reads.
            agent_types: The run's agents in step order.
            events: Starts the core event stream, inside the run's task.
            flight_key: Identical calls share this key: while a run with it is in flight, the
                call joins that run instead of starting another (singleflight).
        """
        if flight_key is not None and (joined := self._in_flight.get(flight_key)) is not None:
            return joined, True
        if self._active >= self.max_concurrent:
            raise Overloaded(
                f"the server is running its maximum of {self.max_concurrent} runs; retry shortly"
            )
        run_id = uuid.uuid4().hex
        record = run_pb2.Run(
            id=run_id,
            status=run_pb2.RUN_STATUS_RUNNING,
            method=method,
            repository_name=repository,
            agent_types=[convert.agent_type_to_proto(t) for t in agent_types],
        )
        record.start_time.GetCurrentTime()
        run = _Run(record=record, request=request, flight_key=flight_key)
        self._forget_old()
        self._runs[run_id] = run
        if flight_key is not None:
            self._in_flight[flight_key] = run_id
        self._active += 1
        if self.observer is not None:
            self.observer.run_started(record)
        run.task = asyncio.create_task(self._drive(run, events), name=f"run-{run_id}")
        return run_id, False

    def get(self, run_id: str) -> run_pb2.Run:
        """The run's current record."""
        return self._find(run_id).record

    def request_of(self, run_id: str) -> Message:
        """The request that started the run."""
        return self._find(run_id).request

    def error_of(self, run_id: str) -> status_pb2.Status | None:
        """The status a failed or cancelled run ended with; None otherwise."""
        return self._find(run_id).error

    async def follow(self, run_id: str, after_sequence: int = 0) -> AsyncGenerator[bytes]:
        """Yield the run's serialized events after `after_sequence`, then new ones until it ends."""
        run = self._find(run_id)
        position = max(after_sequence, 0)
        run.readers += 1
        try:
            while True:
                if position < len(run.log):
                    yield run.log[position]
                    position += 1
                    continue
                if run.done:
                    return
                changed = run.changed
                await changed.wait()
        finally:
            run.readers -= 1

    def abandon(self, run_id: str, reason: run_pb2.CancelReason.ValueType) -> None:
        """A reader went away: cancel the run if nobody else follows it."""
        if self._find(run_id).readers == 0:
            self.cancel(run_id, reason)

    def cancel(self, run_id: str, reason: run_pb2.CancelReason.ValueType) -> run_pb2.Run:
        """Cancel a running run (its model call included); a finished run is left as it is."""
        run = self._find(run_id)
        if self.closing and reason != run_pb2.CANCEL_REASON_EXPLICIT:
            reason = run_pb2.CANCEL_REASON_SHUTDOWN
        if not run.done and run.task is not None:
            run.cancel_reason = reason
            run.task.cancel()
        return run.record

    async def wait(self, run_id: str) -> run_pb2.Run:
        """Wait for the run to end and return its record."""
        start = len(self._find(run_id).log)
        async with contextlib.aclosing(self.follow(run_id, after_sequence=start)) as events:
            async for _ in events:
                pass
        return self.get(run_id)

    async def shutdown(self) -> None:
        """Cancel every run still executing, with reason SHUTDOWN, and wait for them."""
        tasks = [r.task for r in self._runs.values() if r.task is not None and not r.done]
        for run in self._runs.values():
            if not run.done:
                self.cancel(run.record.id, run_pb2.CANCEL_REASON_SHUTDOWN)
        await asyncio.gather(*tasks, return_exceptions=True)

    def _find(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            raise NotFound("run", run_id, hint="runs are kept for an hour after they end")
        return run

    def _forget_old(self) -> None:
        now = time.monotonic()
        for run_id, run in list(self._runs.items()):
            too_many = len(self._runs) >= self.max_kept_runs
            expired = run.ended_at is not None and now - run.ended_at > RUN_RETENTION_S
            if run.done and (too_many or expired):
                del self._runs[run_id]
            elif not too_many:
                break  # runs are in start order: the rest are younger

    async def _drive(self, run: _Run, events: EventSource) -> None:
        record = run.record
        try:
            async for event in events():
                self._append(run, event)
            record.status = run_pb2.RUN_STATUS_SUCCEEDED
        except asyncio.CancelledError:
            # Ours to absorb: the run ends as CANCELLED, its readers are told, the task ends.
            record.status = run_pb2.RUN_STATUS_CANCELLED
            record.cancel_reason = run.cancel_reason or run_pb2.CANCEL_REASON_SHUTDOWN
            run.error = status_pb2.Status(code=code_pb2.CANCELLED, message="the run was cancelled")
            self._append_final(run, cancelled=run_pb2.RunCancelled(reason=record.cancel_reason))
        except Exception as exc:
            run.error = to_status(exc, record.id)
            record.status = run_pb2.RUN_STATUS_FAILED
            record.error.CopyFrom(run_pb2.RunError(code=run.error.code, message=run.error.message))
            self._append_final(
                run, failed=run_pb2.RunFailed(code=run.error.code, message=run.error.message)
            )
        finally:
            record.end_time.GetCurrentTime()
            run.ended_at = time.monotonic()
            self._active -= 1
            if run.flight_key is not None:
                self._in_flight.pop(run.flight_key, None)
            if self.observer is not None:
                self.observer.run_ended(record)
            run.notify()

    def _append(self, run: _Run, event: Event) -> None:
        record = run.record
        record.last_sequence += 1
        message = convert.event_to_proto(record.id, record.last_sequence, event)
        run.log.append(message.SerializeToString())
        match event:
            case TextDelta():
                record.partial_content += event.text
            case Completed() | StepCompleted():
                step = event.step or 0
                run.step_results[step] = convert.result_to_proto(event.result)
                run.step_usage[step] = event.result.usage
                del record.results[:]
                record.results.extend(run.step_results[i] for i in sorted(run.step_results))
                record.usage.CopyFrom(convert.usage_to_proto(sum(run.step_usage.values(), Usage())))
            case ChainCompleted():
                record.final_context.CopyFrom(message.chain_completed.final_context)
        if self.observer is not None:
            self.observer.run_event(record, event)
        run.notify()

    def _append_final(
        self,
        run: _Run,
        *,
        failed: run_pb2.RunFailed | None = None,
        cancelled: run_pb2.RunCancelled | None = None,
    ) -> None:
        record = run.record
        record.last_sequence += 1
        message = agent_service_pb2.WatchRunResponse(
            run_id=record.id, sequence=record.last_sequence, failed=failed, cancelled=cancelled
        )
        run.log.append(message.SerializeToString())
