"""A run this replica owns (executes, or executed): its record, its log, its readers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from woolly_grpc import convert
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2, run_pb2
from woolly_grpc.core import (
    AgentType,
    ChainCompleted,
    Completed,
    Event,
    StepCompleted,
    TextDelta,
    UsageMeter,
)
from woolly_grpc.errors import to_status

if TYPE_CHECKING:
    from opentelemetry.trace import Span


@dataclass(eq=False)
class OwnedRun:
    """A run this replica executes (or executed): the only copy that changes."""

    record: run_pb2.Run
    request: Message
    """The request that started the run, for RetryRun."""
    log: list[bytes] = field(default_factory=list)
    """Serialized WatchRunResponse messages; sequence n is log[n - 1]."""
    task: asyncio.Task[None] | None = None
    error: status_pb2.Status | None = None
    """How a failed or cancelled run ended, with its details (BadRequest…)."""
    cancel_reason: run_pb2.CancelReason.ValueType = run_pb2.CANCEL_REASON_UNSPECIFIED
    flight_key: str | None = None
    """The key identical calls join it by while it is in flight (`flights.Flights`)."""
    detach: bool = False
    readers: int = 0
    """Callers following the run from this replica now (other replicas' hold reader leases)."""
    orphan_check: asyncio.Task[None] | None = None
    """Cancels the run when the grace after its last reader left runs out (`manager`)."""
    on_change: Callable[[OwnedRun], None] | None = None
    """Told when events were added or the run ended (the journal writes them out)."""
    ended_at: float | None = None
    settled: bool = False
    """Whether the manager has booked the run's end (slot, flight key, metrics)."""
    settled_elsewhere: bool = False
    """Another replica settled it FAILED (our lease lapsed): it ends so here too."""
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _partial: list[str] = field(default_factory=list)
    """The text streamed so far, joined only when a snapshot is taken (not once per token)."""
    _step_results: dict[int, agent_pb2.AgentResult] = field(default_factory=dict)
    meter: UsageMeter = field(default_factory=UsageMeter)
    """What the run's agents used so far, however each ended (the core adds to it)."""
    span: Span | None = None
    """The run's span, when tracing is on: a child of the RPC that started it."""

    @classmethod
    def begin(
        cls,
        run_id: str,
        method: str,
        request: Message,
        repository: str,
        agent_types: list[AgentType],
        tenant: str,
    ) -> OwnedRun:
        """A new RUNNING run of `tenant` (only that tenant may see it)."""
        record = run_pb2.Run(
            id=run_id,
            status=run_pb2.RUN_STATUS_RUNNING,
            method=method,
            repository_name=repository,
            agent_types=[convert.agent_type_to_proto(t) for t in agent_types],
            tenant=tenant,
        )
        record.start_time.GetCurrentTime()
        run = cls(record=record, request=request)
        return run

    @property
    def id(self) -> str:
        """The run id."""
        return self.record.id

    @property
    def done(self) -> bool:
        """Whether the run has ended."""
        return self.ended_at is not None

    def ended_before(self, now: float, seconds: float) -> bool:
        """Whether the run ended more than `seconds` before `now` (monotonic)."""
        return self.ended_at is not None and now - self.ended_at > seconds

    def snapshot(self, *, text: bool = True) -> run_pb2.Run:
        """A copy of the record as it is now, with the text streamed so far.

        `text=False` leaves it out: the journal's writes while the run goes on (the log holds it).
        """
        record = run_pb2.Run()
        record.CopyFrom(self.record)
        if text:
            record.partial_content = "".join(self._partial)
        return record

    def stop_orphan_check(self) -> None:
        """A reader is back (or a new check replaces this one)."""
        if self.orphan_check is not None:
            self.orphan_check.cancel()
            self.orphan_check = None

    async def wait_for_change(self) -> None:
        """Return once an event was added or the run ended."""
        await self._changed.wait()

    async def follow(self, position: int) -> AsyncGenerator[list[bytes]]:
        """Yield the log after `position`, then new events until the run ends, as its reader.

        Each yield is every event the reader has not had (never empty).
        """
        self.readers += 1
        self.stop_orphan_check()
        try:
            while True:
                if position < len(self.log):
                    batch = self.log[position:]
                    position += len(batch)
                    yield batch
                    continue
                if self.done:
                    return
                await self.wait_for_change()
        finally:
            self.readers -= 1

    def append(self, event: Event) -> None:
        """Number and log a core event, and keep the record up to date."""
        record = self.record
        record.last_sequence += 1
        message = convert.event_to_proto(record.id, record.last_sequence, event)
        match event:
            case TextDelta():
                self._partial.append(event.text)
            case Completed() | StepCompleted():
                step = event.step or 0
                self._step_results[step] = convert.result_to_proto(event.result)
                del record.results[:]
                record.results.extend(self._step_results[i] for i in sorted(self._step_results))
                record.usage.CopyFrom(convert.usage_to_proto(self.meter.total))
            case ChainCompleted():
                record.final_context.CopyFrom(message.chain_completed.final_context)
        self._log(message)

    def succeed(self) -> None:
        """The run ended with its result."""
        self.record.status = run_pb2.RUN_STATUS_SUCCEEDED
        self._end()

    def cancelled(self) -> None:
        """The run was cancelled (its `cancel_reason` says why; none given means shutdown)."""
        record = self.record
        record.status = run_pb2.RUN_STATUS_CANCELLED
        record.cancel_reason = self.cancel_reason or run_pb2.CANCEL_REASON_SHUTDOWN
        self.error = status_pb2.Status(code=code_pb2.CANCELLED, message="the run was cancelled")
        self._log_final(cancelled=run_pb2.RunCancelled(reason=record.cancel_reason))
        self._end()

    def fail(self, exc: BaseException) -> None:
        """The run failed with `exc`."""
        self.error = status = to_status(exc, self.id)
        self.record.status = run_pb2.RUN_STATUS_FAILED
        self.record.error.CopyFrom(run_pb2.RunError(code=status.code, message=status.message))
        failed = run_pb2.RunFailed(code=status.code, message=status.message, details=status.details)
        self._log_final(failed=failed)
        self._end()

    def _log_final(
        self,
        *,
        failed: run_pb2.RunFailed | None = None,
        cancelled: run_pb2.RunCancelled | None = None,
    ) -> None:
        self.record.last_sequence += 1
        self._log(
            agent_service_pb2.WatchRunResponse(
                run_id=self.id,
                sequence=self.record.last_sequence,
                failed=failed,
                cancelled=cancelled,
            )
        )

    def _log(self, message: agent_service_pb2.WatchRunResponse) -> None:
        self.log.append(message.SerializeToString())
        self._notify()

    def _end(self) -> None:
        # Failed and cancelled runs too: what they used was spent (and billed).
        self.record.usage.CopyFrom(convert.usage_to_proto(self.meter.total))
        self.record.end_time.GetCurrentTime()
        self.ended_at = time.monotonic()
        self._notify()

    def _notify(self) -> None:
        # Swap before setting, so that a reader waits on the event of the state it saw.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if self.on_change is not None:
            self.on_change(self)
