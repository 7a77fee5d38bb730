"""Runs in the shared store: records, requests and event logs that any replica can read.

The replica executing a run writes its events in batches (one append per batch, not per token)
and announces each batch on the run's channel; readers on other replicas replay the log and
follow those announcements. Runs and their logs are kept for `retention_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from google.protobuf.message import Message

from woolly_grpc._gen.woolly.v1 import run_pb2
from woolly_grpc.core import NotFound, OutOfRange
from woolly_grpc.store import Store, StoreError

_log = logging.getLogger(__name__)

_FLUSH_RETRY_S = 0.5
_FLUSH_ATTEMPTS_AFTER_END = 20


def _record_key(run_id: str) -> str:
    return f"run:{run_id}"


def log_key(run_id: str) -> str:
    """The store key of a run's event log."""
    return f"run:{run_id}:log"


def _request_key(run_id: str) -> str:
    return f"run:{run_id}:request"


def unknown_run(run_id: str) -> NotFound:
    """The error for a run that does not exist, or that the caller may not see (the same)."""
    return NotFound("run", run_id, hint="runs are kept for an hour after they end")


def run_channel(run_id: str) -> str:
    """Where a run's new batches and its end are announced."""
    return f"run:{run_id}"


class RunJournal:
    """Reads and writes runs in the store.

    Args:
        store: The shared store (memory for one replica, Redis for several).
        retention_s: How long records and logs are kept after their last write.
        linger_s: How long a flush waits for more events to join its batch.
        recheck_s: A follower re-reads the store this often even without an announcement (one
            may be lost).
        max_batch: Most events in one append (1 = no batching, for comparison).
    """

    def __init__(
        self,
        store: Store,
        *,
        retention_s: float,
        linger_s: float,
        recheck_s: float,
        max_batch: int = 512,
    ) -> None:
        self.store = store
        self.retention_s = retention_s
        self.linger_s = linger_s
        self.recheck_s = recheck_s
        self.max_batch = max_batch

    async def save_request(self, run_id: str, method: str, request: Message) -> None:
        """Keep the request that started a run (RetryRun reads it, on any replica)."""
        value = method.encode() + b"\n" + request.SerializeToString()
        await self.store.set(_request_key(run_id), value, ttl_s=self.retention_s)

    async def load_request(self, run_id: str) -> tuple[str, bytes]:
        """The method and serialized request of a run."""
        raw = await self.store.get(_request_key(run_id))
        if raw is None:
            raise unknown_run(run_id)
        method, _, request = raw.partition(b"\n")
        return method.decode(), request

    async def save_record(self, record: run_pb2.Run) -> None:
        """Write a run's current record."""
        await self.store.set(
            _record_key(record.id), record.SerializeToString(), ttl_s=self.retention_s
        )

    async def load_record(self, run_id: str) -> run_pb2.Run:
        """A run's last written record."""
        raw = await self.store.get(_record_key(run_id))
        if raw is None:
            raise unknown_run(run_id)
        return run_pb2.Run.FromString(raw)

    async def flush_loop(
        self,
        snapshot: Callable[[], run_pb2.Run],
        log: list[bytes],
        wake: asyncio.Event,
        ended: Callable[[], bool],
    ) -> None:
        """Write `log` to the store as it grows, in batches, until the run has ended.

        Args:
            snapshot: A copy of the run's record now; saved with each batch (so other replicas
                see progress).
            log: The run's events, appended to by the run while this loop runs.
            wake: Set when events were added or the run ended.
            ended: Whether the run has ended (the last batch is then written and the loop stops).
        """
        written, failures = 0, 0
        while True:
            await wake.wait()
            # The first write (record and first events) does not linger: other replicas must
            # know the run as soon as its caller does.
            if written and self.linger_s and not ended():
                await asyncio.sleep(self.linger_s)  # let a burst of tokens share one append
            wake.clear()
            while written < len(log):
                batch = log[written : written + self.max_batch]
                if not await self._write(snapshot(), batch, written + len(batch), ended()):
                    break
                written += len(batch)
            complete = ended() and written >= len(log)
            if complete and await self._write(snapshot(), [], written, True):
                return
            if written < len(log) or complete:
                # The store failed: try again a little later, and give up on a run that ended.
                failures += 1
                if ended() and failures > _FLUSH_ATTEMPTS_AFTER_END:
                    return
                await asyncio.sleep(_FLUSH_RETRY_S)
                wake.set()
            else:
                failures = 0

    async def _write(
        self, record: run_pb2.Run, batch: list[bytes], stored: int, ended: bool
    ) -> bool:
        """Append `batch` and save `record` (a snapshot of ours, changed here) as of `stored`."""
        # The stored record never claims more than the stored log holds, so a reader that
        # sees an ended run with a short log knows events were lost, not late.
        if not ended or stored < record.last_sequence:
            record.status = run_pb2.RUN_STATUS_RUNNING
        record.last_sequence = stored
        try:
            if batch:
                await self.store.append(log_key(record.id), batch, ttl_s=self.retention_s)
            await self.save_record(record)
            await self.store.publish(run_channel(record.id), str(stored).encode())
        except StoreError as exc:
            # The run goes on; only readers on other replicas miss it until the store is back.
            _log.warning("could not write run %s to the store: %s", record.id, exc)
            return False
        return True

    async def follow(self, run_id: str, after_sequence: int) -> AsyncGenerator[bytes]:
        """Replay a run's stored events after `after_sequence`, then follow it until it ends.

        Raises:
            NotFound: the run is unknown (or older than the retention).
            OutOfRange: events after `after_sequence` are no longer in the store.
        """
        async with self.store.subscribe(run_channel(run_id)) as announcements:
            changed = asyncio.Event()
            pump = asyncio.create_task(_set_on_each(announcements, changed))
            try:
                position = after_sequence
                while True:
                    changed.clear()
                    for entry in await self.store.read(log_key(run_id), position):
                        yield entry
                        position += 1
                    record = await self.load_record(run_id)
                    if record.status != run_pb2.RUN_STATUS_RUNNING:
                        if position < record.last_sequence:
                            raise OutOfRange(
                                f"run {run_id}: events after {position} are no longer retained"
                            )
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), self.recheck_s)
            finally:
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)


async def _set_on_each(messages: AsyncIterator[bytes], changed: asyncio.Event) -> None:
    with contextlib.suppress(StoreError):
        async for _ in messages:
            changed.set()
