"""Runs: every execution is a task appending numbered events to a log that any reader follows.

The RPC that starts a run is only its first reader; WatchRun is another, on any replica. A run's
log holds serialized WatchRunResponse messages, which are wire-compatible with the StreamExecute
and ExecuteChain responses, so every reader handles every run. Runs executing here are read
from memory (`owned.py`); the journal (`journal.py`) puts them in the shared store for other
replicas, with the record written before the caller's first event. A run executing on another
replica is cancelled through the control channel (`control.py`); how many run at once is bounded
by `limits.RunSlots`.
When the last reader goes away, the run is cancelled after the orphan grace unless it was
started with `detach`, a reader is back, or one on another replica holds a reader lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Protocol

from google.protobuf.message import Message
from google.rpc import status_pb2
from opentelemetry import context as otel_context
from opentelemetry import trace

from woolly_grpc._gen.woolly.v1 import run_pb2
from woolly_grpc.core import AgentType, Event, Unavailable, UsageMeter
from woolly_grpc.store import StoreError
from woolly_grpc.tracing import end_run_span, run_span_attributes

from . import control
from .flights import Flights
from .journal import RunJournal, unknown_run
from .leases import OWNER_STOPPED
from .limits import Refusals, RunSlots
from .owned import OwnedRun

if TYPE_CHECKING:
    from woolly_grpc.config import Settings


EventSource = Callable[[UsageMeter], AsyncGenerator[Event]]
"""Starts the core stream of a run (called once, inside the run's task), which tells the meter
what the run's agents used."""


class RunObserver(Protocol):
    """Sees every run's life (metrics). Must not raise, and must not block."""

    def run_started(self, run: run_pb2.Run) -> None:
        """A run began executing on this replica."""

    def run_event(self, run: run_pb2.Run, event: Event) -> None:
        """A run produced an event (after it was numbered and logged)."""

    def run_ended(self, run: run_pb2.Run, meter: UsageMeter) -> None:
        """A run ended; `run.status`, its end time, results and usage are final.

        `meter` holds what its agents used, per agent type, however the run ended.
        """


class RunManager:
    """Starts runs, keeps their logs and records, and lets readers replay and follow them.

    Every method that finds a run by id takes the caller's tenant: another tenant's run is
    NotFound, exactly like a run that does not exist.

    Args:
        journal: Where runs are shared with other replicas (and kept after they end).
        settings: The `max_concurrent_runs`, `tenant_max_concurrent_runs`, `orphan_grace_s`
            and `run_*` settings.
        observer: Sees every run's events (metrics).
        refusals: Counts and logs the runs refused at a limit.
        tracer: Where runs' spans go; None when tracing is off.
    """

    def __init__(
        self,
        journal: RunJournal,
        settings: Settings,
        *,
        observer: RunObserver | None = None,
        refusals: Refusals | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.journal = journal
        self.tracer = tracer
        self.orphan_grace_s = settings.orphan_grace_s
        self.cancel_wait_s = settings.run_cancel_wait_s
        self.close_flush_s = settings.run_close_flush_s
        self.recheck_s = settings.run_recheck_s
        self.memory_max = settings.run_memory_max
        self.memory_min_s = settings.run_memory_min_s
        self.retention_s = settings.run_retention_s
        self.observer = observer
        self.refusals = refusals or Refusals()
        self.slots = RunSlots(
            settings.max_concurrent_runs, settings.tenant_max_concurrent_runs, self.refusals
        )
        """The runs executing here, within the replica's and each tenant's limit."""
        self.closing = False
        """Set at shutdown: runs whose callers go away are then cancelled as SHUTDOWN."""
        self.lease_s = journal.lease_s  # the readers' leases it waits on are the journal's
        self._runs: OrderedDict[str, OwnedRun] = OrderedDict()
        self._flights = Flights()
        self._control: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        journal.writer.on_lease_lost = self._lost

    @property
    def active(self) -> int:
        """Runs executing on this replica now."""
        return self.slots.active

    async def open(self) -> None:
        """Start the journal's writer and listening to other replicas' cancel requests."""
        empty = contextvars.Context()
        self._writer = asyncio.create_task(
            self.journal.writer.run(), name="runs-journal", context=empty
        )
        ready = asyncio.Event()
        self._control = asyncio.create_task(
            control.listen(self.journal.store, self._cancel_requested, ready, self.recheck_s),
            name="runs-control",
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.cancel_wait_s):
                await ready.wait()

    async def start(
        self,
        *,
        method: str,
        request: Message,
        repository: str,
        agent_types: list[AgentType],
        events: EventSource,
        tenant: str,
        flight_key: str | None = None,
        detach: bool = False,
    ) -> tuple[str, bool]:
        """Start a run in its own task; returns its id and whether it was already in flight.

        The run's record is in the store (when it is up) before this returns: other replicas
        know the run as soon as its caller does.

        Args:
            method: The RPC that asked for it (recorded, and used by RetryRun).
            request: That RPC's request.
            repository: The repository the run reads.
            agent_types: The run's agents in step order.
            events: Starts the core event stream, inside the run's task.
            tenant: The caller's tenant: only it may see the run.
            flight_key: Identical calls share this key: while a run with it is in flight, the
                call joins that run instead of starting another (`flights.Flights`).
            detach: Run to the end even when every reader has gone.
        """
        # A join is no new run, and cache hits never get here: neither takes a slot.
        if (joined := self._flights.join(flight_key, detach=detach)) is not None:
            if joined.span is not None:  # the caller's span leads to the run it joined
                trace.get_current_span().add_link(joined.span.get_span_context())
            return joined.id, True
        self.slots.check(tenant)
        run = OwnedRun.begin(uuid.uuid4().hex, method, request, repository, agent_types, tenant)
        run.detach = detach
        self._forget_old()
        self._runs[run.id] = run
        self._flights.take_off(flight_key, run)
        self.slots.take(tenant)
        try:
            await self.journal.writer.begin(run, method)
        except BaseException:  # cancelled while writing: nothing has started yet
            self._runs.pop(run.id, None)
            self._flights.land(run)
            self.slots.give_back(tenant)
            raise
        if self.observer is not None:
            self.observer.run_started(run.record)
        if self.tracer is not None:  # started here, where the caller's span is current
            run.span = self.tracer.start_span(
                f"run {method}", attributes=run_span_attributes(run.record)
            )
        # An empty context: the run outlives its first caller's call and owes it nothing.
        run.task = asyncio.create_task(
            self._drive(run, events), name=f"run-{run.id}", context=contextvars.Context()
        )
        # A task cancelled before its first step never runs _drive's `finally`: settle it here.
        run.task.add_done_callback(lambda _task: self._settle(run))
        return run.id, False

    async def get(self, run_id: str, *, tenant: str, text: bool = True) -> run_pb2.Run:
        """The run's current record (this replica's, else the store's).

        `text=False` may leave out a running run's `partial_content` (a check of its status or
        tenant need not read another replica's log for it).

        Raises:
            NotFound: the run is unknown, or belongs to another tenant than the caller's.
        """
        run = self._runs.get(run_id)
        if run is not None:
            record = run.snapshot(text=text)
        else:
            record = await self.journal.load_record(run_id)
        if record.tenant != tenant:
            raise unknown_run(run_id)
        return await self.journal.with_text(record) if text and run is None else record

    async def request_of(self, run_id: str, *, tenant: str) -> tuple[str, bytes]:
        """The method and serialized request that started the run."""
        await self.get(run_id, tenant=tenant, text=False)
        run = self._runs.get(run_id)
        if run is not None:
            return run.record.method, run.request.SerializeToString()
        return await self.journal.load_request(run_id)

    def error_of(self, run_id: str) -> status_pb2.Status | None:
        """The full status a run executed here ended with, if it failed or was cancelled."""
        run = self._runs.get(run_id)
        return run.error if run is not None else None

    async def follow(
        self, run_id: str, after_sequence: int = 0, *, watching: bool = False
    ) -> AsyncGenerator[list[bytes]]:
        """Yield the run's serialized events after `after_sequence`, then new ones until it ends.

        Each yield is every event there is that the reader has not had (never empty): one when
        the reader keeps up, more when it is behind, so that it may merge them
        (`convert.merge_text_deltas`). While this follows a run, the run has a reader and is
        not orphaned. `watching`: the reader is a WatchRun (its span then links to the run's,
        when tracing).
        """
        run = self._runs.get(run_id)
        if run is None:  # the journal holds a reader lease while it follows
            async for entries in self.journal.follow(run_id, max(after_sequence, 0)):
                yield entries
            return
        if watching and run.span is not None:
            trace.get_current_span().add_link(run.span.get_span_context())
        # Closed with this generator: the run must lose its reader before `abandon` looks.
        async with contextlib.aclosing(run.follow(max(after_sequence, 0))) as batches:
            async for batch in batches:
                yield batch

    async def stored(self, run_id: str) -> None:
        """Return once this replica's run is all in the store (see `RunWriter.stored`).

        A caller is told a run ended only when every replica would say so.
        """
        if run_id in self._runs:
            await self.journal.writer.stored(run_id, self.recheck_s)

    async def wait(self, run_id: str, *, tenant: str) -> run_pb2.Run:
        """Follow the run to its end (as a reader) and return its record."""
        start = (await self.get(run_id, tenant=tenant, text=False)).last_sequence
        async with contextlib.aclosing(self.follow(run_id, after_sequence=start)) as batches:
            async for _ in batches:
                pass
        await self.stored(run_id)
        return await self.get(run_id, tenant=tenant)

    def abandon(self, run_id: str, reason: run_pb2.CancelReason.ValueType) -> None:
        """A reader went away: unless someone still reads it, cancel the run after the grace."""
        run = self._runs.get(run_id)
        if run is None or run.done or run.detach or run.readers:
            return
        run.stop_orphan_check()
        run.orphan_check = asyncio.create_task(
            self._orphan_check(run, reason), context=contextvars.Context()
        )

    async def _orphan_check(self, run: OwnedRun, reason: run_pb2.CancelReason.ValueType) -> None:
        """After the grace, cancel the run unless it has a reader here or a reader lease."""
        await asyncio.sleep(self.orphan_grace_s)
        while not (run.done or run.detach or run.readers):
            try:
                watched = await self.journal.leases.watched(run.id)
            except StoreError:
                watched = True  # the store cannot say: better a run too many than one lost
            if not watched:
                run.orphan_check = None  # the task ends here: nothing to stop any more
                self._cancel_here(run, reason)
                return
            await asyncio.sleep(self.lease_s)  # a lease lapses within this if its reader left

    async def cancel(
        self, run_id: str, reason: run_pb2.CancelReason.ValueType, *, tenant: str
    ) -> run_pb2.Run:
        """Stop a run (its model call included) wherever it runs; returns it as it ended."""
        record = await self.get(run_id, tenant=tenant, text=False)
        run = self._runs.get(run_id)
        if run is not None:
            self._cancel_here(run, reason)
            return await self.wait(run_id, tenant=tenant)
        if record.status != run_pb2.RUN_STATUS_RUNNING:
            return record
        await control.ask_to_cancel(self.journal.store, run_id, reason)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.cancel_wait_s):
                await self.wait(run_id, tenant=tenant)
        return await self.get(run_id, tenant=tenant)

    def cancel_all(self) -> list[OwnedRun]:
        """Cancel every run still executing here (reason SHUTDOWN); returns them."""
        self.closing = True
        running = [r for r in self._runs.values() if not r.done]
        for run in running:
            self._cancel_here(run, run_pb2.CANCEL_REASON_SHUTDOWN)
        return running

    async def close(self) -> None:
        """Cancel every run still executing here (reason SHUTDOWN) and write them out."""
        running = self.cancel_all()
        await asyncio.gather(*(r.task for r in running if r.task), return_exceptions=True)
        for task in (self._writer, self._control):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        # A moment to write the last events out; a store that is away gets no more.
        await self.journal.writer.flush(self.close_flush_s)
        for run in self._runs.values():
            run.stop_orphan_check()

    def _lost(self, run: OwnedRun) -> None:
        """Another replica settled a run of ours (our lease lapsed): it ends FAILED here too."""
        if not run.done and run.task is not None:
            run.settled_elsewhere = True
            run.task.cancel()

    def _cancel_here(self, run: OwnedRun, reason: run_pb2.CancelReason.ValueType) -> None:
        if self.closing and reason != run_pb2.CANCEL_REASON_EXPLICIT:
            reason = run_pb2.CANCEL_REASON_SHUTDOWN
        if not run.done and run.task is not None:
            run.cancel_reason = reason
            run.task.cancel()

    async def _drive(self, run: OwnedRun, events: EventSource) -> None:
        if run.span is not None:
            # The task began in an empty context (the run outlives its caller): its span is
            # made current here, so that the core's and pydantic-ai's spans are its children.
            # No detach: this context ends with the task.
            otel_context.attach(trace.set_span_in_context(run.span))
        try:
            # Closed here, in the run's own task, whatever happens: the core counts what the
            # model used as it closes.
            async with contextlib.aclosing(events(run.meter)) as stream:
                async for event in stream:
                    run.append(event)
                    if self.observer is not None:
                        self.observer.run_event(run.record, event)
            run.succeed()
        except asyncio.CancelledError:  # ours to absorb: readers are told, the task ends
            if run.settled_elsewhere:
                run.fail(Unavailable(OWNER_STOPPED))
            else:
                run.cancelled()
        except Exception as exc:
            run.fail(exc)
        finally:
            self._settle(run)

    def _settle(self, run: OwnedRun) -> None:
        """Book a run's end once: free its slot, its flight key, tell the observer."""
        if run.settled:
            return
        run.settled = True
        if not run.done:
            run.cancelled()  # cancelled before it ever ran
        self.slots.give_back(run.record.tenant)
        self._flights.land(run)
        if self.observer is not None:
            self.observer.run_ended(run.record, run.meter)
        if run.span is not None:
            end_run_span(run.span, run.record)

    def _cancel_requested(self, run_id: str, reason: run_pb2.CancelReason.ValueType) -> None:
        """Another replica asked to cancel a run (`control.py`): if it executes here, it stops."""
        if (run := self._runs.get(run_id)) is not None and not run.done:
            self._cancel_here(run, reason)

    def _forget_old(self) -> None:
        """Drop the oldest finished runs beyond `memory_max` (the journal still has them)."""
        now = time.monotonic()
        doomed: list[str] = []  # oldest first; usually the oldest is kept and the scan stops
        for run_id, run in self._runs.items():
            kept = len(self._runs) - len(doomed)
            if kept < self.memory_max and not run.ended_before(now, self.retention_s):
                break
            # Its readers still need its error status, and until the store has its end, the
            # store's copy would say RUNNING.
            if (
                not run.readers
                and run.ended_before(now, self.memory_min_s)
                and self.journal.writer.written(run_id)
            ):
                doomed.append(run_id)
        for run_id in doomed:
            del self._runs[run_id]
