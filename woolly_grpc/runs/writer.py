"""This replica's runs, written to the shared store.

One writer per replica (`RunWriter.run`) writes every run this replica owns: whatever changed
since its last write, for all runs at once, in one pipelined round trip, then announces each
run's new events on its channel. While the store is away the writer keeps everything and tries
again, for as long as it takes, so that no run is lost however long the outage; one WARNING says
the outage began and one line says when it ended. What it keeps is bounded: past
`max_pending_bytes` of events waiting, the oldest ended runs keep only their final record, which
then claims more events than the log holds, so that a reader gets OUT_OF_RANGE rather than a
silent gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from woolly_grpc._gen.woolly.v1 import run_pb2
from woolly_grpc.store import Store, StoreError
from woolly_grpc.store.base import Append, Claim, Publish, Put, Write

from .keys import log_key, record_key, request_key, run_channel
from .leases import Leases
from .owned import OwnedRun

_log = logging.getLogger(__name__)

_BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 5.0)
"""The writer's waits after failed writes while the store is away (the last one repeats)."""
_MAX_WRITE_ENTRIES = 2_000
"""Events in one write at most: a backlog after an outage goes out in several round trips."""


@dataclass(eq=False)
class _Pending:
    """A run the writer still has things to write for."""

    run: OwnedRun | None
    """None once only its final record is kept (the bound on what an outage may hold)."""
    record: run_pb2.Run
    """The record to write when `run` is gone."""
    request: bytes
    """`method\\nrequest`: written with the first record, and again with the final one (so that
    RetryRun finds it as long as the record, however long the run took)."""
    written: int = 0
    """Events of the run the store holds."""
    request_stored: bool = False
    """Whether the store holds the request."""
    renewed_at: float = float("-inf")
    """When the owner lease was last renewed (event-loop time)."""
    ended: bool = False
    """Whether the store holds the run's final record."""
    log_renewed_at: float = float("-inf")
    """When the stored log's expiry was last set (event-loop time)."""


@dataclass
class _Outage:
    """The store, as the writer sees it: away since when, and how often it failed."""

    since: float | None = None
    failures: int = 0
    writes: list[float] = field(default_factory=list)


class RunWriter:
    """Writes this replica's runs to the store (see the module docstring).

    Args:
        store: The shared store (memory for one replica, Redis for several).
        leases: Whose owner lease each write claims or renews.
        retention_s: How long records and logs are kept after their last write.
        linger_s: How long the writer lets new events gather before a write.
        max_pending_bytes: Events waiting to be written, at most (see the module docstring).
        on_lease_lost: Told of a run of ours that another replica settled (our lease lapsed,
            e.g. while the store was away): this replica stops it.
    """

    def __init__(
        self,
        store: Store,
        leases: Leases,
        *,
        retention_s: float,
        linger_s: float,
        max_pending_bytes: int,
        on_lease_lost: Callable[[OwnedRun], None] | None = None,
    ) -> None:
        self.store = store
        self.leases = leases
        self.retention_s = retention_s
        self.lease_s = leases.lease_s
        self.linger_s = linger_s
        self.max_pending_bytes = max_pending_bytes
        self.on_lease_lost = on_lease_lost
        self._pending: dict[str, _Pending] = {}
        self._wake = asyncio.Event()
        self._ended = asyncio.Event()
        """A run ended since the last write: the writer writes at once, lingering no more."""
        self._wrote = asyncio.Event()
        """Set (and replaced) after each write attempt, for `stored`."""
        self._outage = _Outage()
        self.failed_writes = 0
        """Writes that failed since start (each is retried): for /metrics."""
        self.dropped_events = 0
        """Events given up past `max_pending_bytes` since start: for /metrics."""
        self.leases_lost = 0
        """Runs of this replica another one settled since start (our lease lapsed)."""

    @property
    def backlog(self) -> int:
        """Runs with something not yet written."""
        return len(self._pending)

    def written(self, run_id: str) -> bool:
        """Whether the store has all there is of this run (nothing of it waits to be written)."""
        return run_id not in self._pending

    async def stored(self, run_id: str, timeout_s: float) -> None:
        """Return once the store has all of this run (at once while it is away; at most timeout_s).

        An ended run's caller waits for this before it is told the end, so that any replica it
        asks next knows the end too; it costs one write (an ended run's is not lingered over).
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not self.written(run_id) and self._outage.since is None:
                    wrote = self._wrote
                    await wrote.wait()

    async def begin(self, run: OwnedRun, method: str) -> None:
        """Write a new run's lease, record and request before its caller sees `started`.

        While the store is away the run goes on: the writer writes it when the store is back.
        """
        pending = self._pending[run.id] = _Pending(
            run, run.snapshot(), request=method.encode() + b"\n" + run.request.SerializeToString()
        )
        run.on_change = self._changed
        now = asyncio.get_running_loop().time()
        batch = [
            self.leases.claim(run.id),
            *self._run_writes(pending, now),
        ]
        try:
            await self.store.write(batch)
        except StoreError as exc:
            self._failed(exc)  # the run goes on; the writer writes it when the store is back
        except BaseException:  # cancelled: the run never starts
            del self._pending[run.id]
            raise
        else:
            pending.request_stored, pending.renewed_at, pending.log_renewed_at = True, now, now
            self._recovered()

    def _changed(self, run: OwnedRun) -> None:
        if run.done:
            self._ended.set()
        self._wake.set()

    async def run(self) -> None:
        """Write what changed, for every run at once, until cancelled (see the module doc)."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        while True:
            # A cancellation that lands in a store operation's own timeout can come out as a
            # failed write (TimeoutError is an OSError); the task still says it was cancelled.
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            # asyncio.timeout, not wait_for: 3.11's wait_for can lose a cancellation (shutdown).
            with contextlib.suppress(TimeoutError):  # wake up at least to renew leases
                async with asyncio.timeout(self.lease_s / 3):
                    await self._wake.wait()
            if self.linger_s:  # let a burst of tokens share one write, unless a run ended
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.linger_s):
                        await self._ended.wait()
            self._wake.clear()
            self._ended.clear()
            written = await self._write_once(loop.time())
            wrote, self._wrote = self._wrote, asyncio.Event()
            wrote.set()
            if written == "failed":
                failures = self._outage.failures
                await asyncio.sleep(_BACKOFF_S[min(failures, len(_BACKOFF_S)) - 1])
                self._wake.set()

    async def flush(self, timeout_s: float) -> None:
        """Write out what is pending, for at most `timeout_s` (at shutdown)."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while await self._write_once(loop.time()) == "written":
                    pass

    async def _write_once(self, now: float) -> Literal["written", "idle", "failed"]:
        """One write of everything due: whether it wrote, had nothing to write, or failed."""
        self._bound_pending()
        batch: list[Write] = []
        claims: list[_Pending] = []  # the runs whose lease this write renews, in batch order
        progress: list[tuple[_Pending, int, bool, bool]] = []  # run, written, ended, renewed
        for pending in list(self._pending.values()):
            if len(batch) > _MAX_WRITE_ENTRIES:
                self._wake.set()  # the rest next time
                break
            run = pending.run
            if run is not None and not run.done and now - pending.renewed_at >= self.lease_s / 3:
                batch.append(self.leases.claim(run.id))
                claims.append(pending)
            writes = self._run_writes(pending, now)
            if writes:
                batch += writes
                ended = run is None or run.done
                renewed = any(isinstance(w, Append) and w.renew for w in writes)
                written = len(run.log) if run else pending.written
                progress.append((pending, written, ended, renewed))
        if not batch:
            return "idle"
        try:
            answers = await self.store.write(batch)
        except StoreError as exc:
            self._failed(exc)
            return "failed"
        self._recovered()
        held = iter(
            answer for op, answer in zip(batch, answers, strict=True) if isinstance(op, Claim)
        )
        for pending in claims:
            if next(held):
                pending.renewed_at = now
            elif pending.run is not None:
                self._lost(pending.run)
        self._advance(progress, now)
        return "written"

    def _advance(self, progress: list[tuple[_Pending, int, bool, bool]], now: float) -> None:
        """After a write: what the store now holds of each run; ended runs written are done."""
        for pending, written, ended, renewed in progress:
            pending.written, pending.request_stored, pending.ended = written, True, ended
            if renewed:
                pending.log_renewed_at = now
            if ended and (pending.run is None or written >= len(pending.run.log)):
                self._pending.pop(pending.record.id, None)

    def _run_writes(self, pending: _Pending, now: float) -> list[Write]:
        """What the store lacks of one run (new events, record, request); [] if nothing.

        The log's expiry is set on its first write and its last, and renewed in between only
        every tenth of the retention: one command per write less, and a long run's beginning
        still never expires before its end.
        """
        run, ttl = pending.run, self.retention_s
        if run is None:  # only its final record was kept: it claims events the log lacks
            record = pending.record
            return [Put(record_key(record.id), record.SerializeToString(), ttl)]
        new = run.log[pending.written :]
        if not new and pending.request_stored and (pending.ended or not run.done):
            return []
        writes: list[Write] = []
        if not pending.request_stored or run.done:  # the final write renews its expiry too
            writes.append(Put(request_key(run.id), pending.request, ttl))
        # While the run goes on, its text is in the log only: a record carrying it would grow
        # with the answer and be rewritten whole at every write (quadratic in its length).
        record = run.snapshot(text=run.done)
        stored = len(run.log)
        # The stored record never claims more than the stored log holds, so a reader that sees
        # an ended run with a short log knows events were lost, not late.
        if not run.done or stored < record.last_sequence:
            record.status = run_pb2.RUN_STATUS_RUNNING
        record.last_sequence = stored
        renew = run.done or not pending.written or now - pending.log_renewed_at >= ttl / 10
        return [
            *writes,
            Append(log_key(run.id), new, ttl, renew=renew),
            Put(record_key(run.id), record.SerializeToString(), ttl),
            Publish(run_channel(run.id), str(stored).encode()),
        ]

    def _bound_pending(self) -> None:
        """Past the bound, the oldest ended runs keep only their final record."""
        waiting = sum(
            sum(len(e) for e in p.run.log[p.written :]) for p in self._pending.values() if p.run
        )
        for pending in list(self._pending.values()):
            if waiting <= self.max_pending_bytes:
                return
            run = pending.run
            if run is None or not run.done:
                continue
            waiting -= sum(len(e) for e in run.log[pending.written :])
            self.dropped_events += len(run.log) - pending.written
            pending.record, pending.run = run.snapshot(), None
            _log.warning(
                "run %s: %d events dropped while the store was away (readers get OUT_OF_RANGE)",
                run.id,
                len(run.log) - pending.written,
            )

    def _lost(self, run: OwnedRun) -> None:
        """Another replica settled a run of ours: write nothing more for it, and stop it."""
        self._pending.pop(run.id, None)
        self.leases_lost += 1
        _log.warning(
            "run %s was settled by another replica (our lease lapsed); stopping it", run.id
        )
        if self.on_lease_lost is not None:
            self.on_lease_lost(run)

    def _failed(self, exc: StoreError) -> None:
        outage = self._outage
        outage.failures += 1
        self.failed_writes += 1
        if outage.since is None:
            outage.since = asyncio.get_running_loop().time()
            _log.warning(
                "run store unreachable (%s): runs go on, and are written when it is back", exc
            )

    def _recovered(self) -> None:
        outage = self._outage
        if outage.since is not None:
            away = asyncio.get_running_loop().time() - outage.since
            _log.warning(
                "run store reachable again after %.1f s (%d failed writes); writing %d runs",
                away,
                outage.failures,
                len(self._pending),
            )
        outage.since, outage.failures = None, 0
