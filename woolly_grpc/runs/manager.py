"""Runs: every execution is a task appending numbered events to a log that any reader follows.

The RPC that starts a run is only its first reader; WatchRun is another, on any replica. A run's
log holds serialized WatchRunResponse messages, which are wire-compatible with the StreamExecute
and ExecuteChain responses, so every reader handles every run. Runs executing here are read
from memory (`owned.py`); the journal (`journal.py`) puts them in the shared store for other
replicas.
When the last reader goes away, the run is cancelled after the orphan grace unless it was
started with `detach` or someone attaches again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from google.protobuf.message import Message
from google.rpc import status_pb2

from woolly_grpc._gen.woolly.v1 import run_pb2
from woolly_grpc.core import AgentType, Event, Overloaded, UsageMeter
from woolly_grpc.store import StoreError

from .flights import Flights
from .journal import RunJournal, unknown_run
from .owned import OwnedRun

if TYPE_CHECKING:
    from woolly_grpc.config import Settings

_log = logging.getLogger(__name__)

EventSource = Callable[[UsageMeter], AsyncGenerator[Event]]
"""Starts the core stream of a run (called once, inside the run's task), which tells the meter
what the run's agents used."""

CONTROL_CHANNEL = "runs:control"
"""Replicas tell each other `cancel <id> <reason>`, `attach <id>` and `detach <id>` here."""


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
        settings: The `max_concurrent_runs`, `orphan_grace_s` and `run_*` settings.
        observer: Sees every run's events (metrics).
    """

    def __init__(
        self, journal: RunJournal, settings: Settings, *, observer: RunObserver | None = None
    ) -> None:
        self.journal = journal
        self.max_concurrent = settings.max_concurrent_runs
        self.orphan_grace_s = settings.orphan_grace_s
        self.cancel_wait_s = settings.run_cancel_wait_s
        self.close_flush_s = settings.run_close_flush_s
        self.recheck_s = settings.run_recheck_s
        self.memory_max = settings.run_memory_max
        self.memory_min_s = settings.run_memory_min_s
        self.retention_s = settings.run_retention_s
        self.observer = observer
        self.closing = False
        """Set at shutdown: runs whose callers go away are then cancelled as SHUTDOWN."""
        self._runs: OrderedDict[str, OwnedRun] = OrderedDict()
        self._flights = Flights()
        self._active = 0
        self._control: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> int:
        """Runs executing on this replica now."""
        return self._active

    async def open(self) -> None:
        """Start listening to other replicas (cancel requests, remote watchers)."""
        ready = asyncio.Event()
        self._control = asyncio.create_task(self._listen(ready), name="runs-control")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), self.cancel_wait_s)

    def start(
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
        if (joined := self._flights.join(flight_key, detach=detach)) is not None:
            return joined.id, True
        if self._active >= self.max_concurrent:
            raise Overloaded(
                f"the server is running its maximum of {self.max_concurrent} runs; retry shortly"
            )
        run = OwnedRun.begin(uuid.uuid4().hex, method, request, repository, agent_types, tenant)
        run.detach = detach
        self._forget_old()
        self._runs[run.id] = run
        self._flights.take_off(flight_key, run)
        self._active += 1
        if self.observer is not None:
            self.observer.run_started(run.record)
        # An empty context: the run outlives its first caller's call and owes it nothing.
        run.task = asyncio.create_task(
            self._drive(run, events), name=f"run-{run.id}", context=contextvars.Context()
        )
        # A task cancelled before its first step never runs _drive's `finally`: settle it here.
        run.task.add_done_callback(lambda _task: self._settle(run))
        self._spawn(self.journal.flush_loop(run.snapshot, run.log, run.unflushed, lambda: run.done))
        return run.id, False

    async def get(self, run_id: str, *, tenant: str) -> run_pb2.Run:
        """The run's current record (this replica's, else the store's).

        Raises:
            NotFound: the run is unknown, or belongs to another tenant than the caller's.
        """
        run = self._runs.get(run_id)
        record = run.snapshot() if run is not None else await self.journal.load_record(run_id)
        if record.tenant != tenant:
            raise unknown_run(run_id)
        return record

    async def request_of(self, run_id: str, *, tenant: str) -> tuple[str, bytes]:
        """The method and serialized request that started the run."""
        await self.get(run_id, tenant=tenant)
        run = self._runs.get(run_id)
        if run is not None:
            return run.record.method, run.request.SerializeToString()
        return await self.journal.load_request(run_id)

    def error_of(self, run_id: str) -> status_pb2.Status | None:
        """The full status a run executed here ended with, if it failed or was cancelled."""
        run = self._runs.get(run_id)
        return run.error if run is not None else None

    async def follow(self, run_id: str, after_sequence: int = 0) -> AsyncGenerator[bytes]:
        """Yield the run's serialized events after `after_sequence`, then new ones until it ends.

        While this follows a run, the run has a reader and is not orphaned.
        """
        run = self._runs.get(run_id)
        if run is None:
            async with self._attached_remotely(run_id):
                async for entry in self.journal.follow(run_id, max(after_sequence, 0)):
                    yield entry
            return
        position = max(after_sequence, 0)
        run.readers += 1
        run.stop_orphan_timer()
        try:
            while True:
                if position < len(run.log):
                    yield run.log[position]
                    position += 1
                    continue
                if run.done:
                    return
                await run.wait_for_change()
        finally:
            run.readers -= 1

    async def wait(self, run_id: str, *, tenant: str) -> run_pb2.Run:
        """Follow the run to its end (as a reader) and return its record."""
        start = (await self.get(run_id, tenant=tenant)).last_sequence
        async with contextlib.aclosing(self.follow(run_id, after_sequence=start)) as events:
            async for _ in events:
                pass
        return await self.get(run_id, tenant=tenant)

    def abandon(self, run_id: str, reason: run_pb2.CancelReason.ValueType) -> None:
        """A reader went away: unless someone still reads it, cancel the run after the grace."""
        run = self._runs.get(run_id)
        if run is None or run.done or run.detach or run.readers or run.remote_readers:
            return
        run.stop_orphan_timer()
        loop = asyncio.get_running_loop()
        run.orphan_timer = loop.call_later(
            self.orphan_grace_s, self._cancel_if_orphaned, run, reason
        )

    async def cancel(
        self, run_id: str, reason: run_pb2.CancelReason.ValueType, *, tenant: str
    ) -> run_pb2.Run:
        """Stop a run (its model call included) wherever it runs; returns it as it ended."""
        record = await self.get(run_id, tenant=tenant)
        run = self._runs.get(run_id)
        if run is not None:
            self._cancel_here(run, reason)
            return await self.wait(run_id, tenant=tenant)
        if record.status != run_pb2.RUN_STATUS_RUNNING:
            return record
        await self.journal.store.publish(CONTROL_CHANNEL, f"cancel {run_id} {reason}".encode())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait(run_id, tenant=tenant), self.cancel_wait_s)
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
        if self._background:
            # Give the journal a moment to write the last events out; a dead store gets no more.
            _, stuck = await asyncio.wait(self._background, timeout=self.close_flush_s)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        if self._control is not None:
            self._control.cancel()
            await asyncio.gather(self._control, return_exceptions=True)

    def _cancel_if_orphaned(self, run: OwnedRun, reason: run_pb2.CancelReason.ValueType) -> None:
        if not (run.done or run.detach or run.readers or run.remote_readers):
            self._cancel_here(run, reason)

    def _cancel_here(self, run: OwnedRun, reason: run_pb2.CancelReason.ValueType) -> None:
        if self.closing and reason != run_pb2.CANCEL_REASON_EXPLICIT:
            reason = run_pb2.CANCEL_REASON_SHUTDOWN
        if not run.done and run.task is not None:
            run.cancel_reason = reason
            run.task.cancel()

    async def _drive(self, run: OwnedRun, events: EventSource) -> None:
        try:
            # Inside the try: a cancel that lands while the request is saved still ends the run.
            try:
                await self.journal.save_request(run.id, run.record.method, run.request)
            except StoreError as exc:
                _log.warning("could not store the request of run %s: %s", run.id, exc)
            # Closed here, in the run's own task, whatever happens: the core counts what the
            # model used as it closes.
            async with contextlib.aclosing(events(run.meter)) as stream:
                async for event in stream:
                    run.append(event)
                    if self.observer is not None:
                        self.observer.run_event(run.record, event)
            run.succeed()
        except asyncio.CancelledError:
            run.cancelled()  # ours to absorb: readers are told, the task ends normally
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
        self._active -= 1
        self._flights.land(run)
        if self.observer is not None:
            self.observer.run_ended(run.record, run.meter)

    @contextlib.asynccontextmanager
    async def _attached_remotely(self, run_id: str) -> AsyncIterator[None]:
        """Tell the run's replica a reader follows it from here (so it is not orphaned)."""
        store = self.journal.store
        with contextlib.suppress(StoreError):
            await store.publish(CONTROL_CHANNEL, f"attach {run_id}".encode())
        try:
            yield
        finally:
            with contextlib.suppress(StoreError):
                await store.publish(CONTROL_CHANNEL, f"detach {run_id}".encode())

    async def _listen(self, ready: asyncio.Event) -> None:
        while True:
            try:
                async with self.journal.store.subscribe(CONTROL_CHANNEL) as messages:
                    ready.set()
                    async for message in messages:
                        try:
                            self._on_control(message.decode().split())
                        except Exception:  # one bad message must not deafen this replica
                            _log.exception("ignored a run control message")
            except StoreError as exc:
                _log.warning("run control channel lost (%s); listening again shortly", exc)
                ready.set()
                await asyncio.sleep(self.recheck_s)

    def _on_control(self, words: list[str]) -> None:
        if len(words) < 2 or (run := self._runs.get(words[1])) is None or run.done:
            return
        if words[0] == "cancel" and len(words) == 3 and words[2].isdigit():
            self._cancel_here(run, run_pb2.CancelReason.ValueType(int(words[2])))
        elif words[0] == "attach":
            run.remote_readers += 1
            run.stop_orphan_timer()
        elif words[0] == "detach":
            run.remote_readers = max(0, run.remote_readers - 1)
            self.abandon(run.id, run_pb2.CANCEL_REASON_CLIENT)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, context=contextvars.Context())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _forget_old(self) -> None:
        """Drop the oldest finished runs beyond `memory_max` (the journal still has them)."""
        now = time.monotonic()
        doomed: list[str] = []  # oldest first; usually the oldest is kept and the scan stops
        for run_id, run in self._runs.items():
            kept = len(self._runs) - len(doomed)
            if kept < self.memory_max and not run.ended_before(now, self.retention_s):
                break
            # Its readers still need its error status, and its journal may still be writing.
            if not run.readers and run.ended_before(now, self.memory_min_s):
                doomed.append(run_id)
        for run_id in doomed:
            del self._runs[run_id]
