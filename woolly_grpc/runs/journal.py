"""Runs in the shared store: records, requests, event logs and leases any replica can read.

This replica's runs go to the store through its writer (`writer.py`). The owner lease is claimed
with a run's record and renewed by the writer; readers settle a run whose owner's lease lapsed,
and a follower holds a reader lease (`leases.py`). Where each part of a run lives in the store is
`keys.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from woolly_grpc._gen.woolly.v1 import run_pb2
from woolly_grpc.core import NotFound, OutOfRange
from woolly_grpc.store import Store, StoreError

from .keys import log_key, record_key, request_key, run_channel, streamed_text
from .leases import Leases
from .owned import OwnedRun
from .writer import RunWriter


def unknown_run(run_id: str) -> NotFound:
    """The error for a run that does not exist, or that the caller may not see (the same)."""
    return NotFound("run", run_id, hint="runs are kept for an hour after they end")


class RunJournal:
    """Reads and writes runs in the store.

    Args:
        store: The shared store (memory for one replica, Redis for several).
        replica: This replica's id: the holder of the owner leases of its runs.
        retention_s: How long records and logs are kept after their last write.
        lease_s: How long an owner or reader lease lasts unless renewed.
        linger_s: How long the writer lets new events gather before a write.
        recheck_s: A follower re-reads the store this often even without an announcement (one
            may be lost).
        max_pending_bytes: Events waiting to be written, at most (see `writer.py`).
        on_lease_lost: Told of a run of ours that another replica settled (our lease lapsed,
            e.g. while the store was away): this replica stops it.
    """

    def __init__(
        self,
        store: Store,
        *,
        replica: str,
        retention_s: float,
        lease_s: float,
        linger_s: float,
        recheck_s: float,
        max_pending_bytes: int = 64 * 1024 * 1024,
        on_lease_lost: Callable[[OwnedRun], None] | None = None,
    ) -> None:
        self.store = store
        self.lease_s = lease_s
        self.recheck_s = recheck_s
        self.leases = Leases(store, replica=replica, lease_s=lease_s, retention_s=retention_s)
        """The owner's and readers' leases, and settling runs whose owner stopped."""
        self.writer = RunWriter(
            store,
            self.leases,
            retention_s=retention_s,
            linger_s=linger_s,
            max_pending_bytes=max_pending_bytes,
            on_lease_lost=on_lease_lost,
        )
        """Writes this replica's runs to the store."""

    async def load_request(self, run_id: str) -> tuple[str, bytes]:
        """The method and serialized request of a run."""
        raw = await self.store.get(request_key(run_id))
        if raw is None:
            raise unknown_run(run_id)
        method, _, request = raw.partition(b"\n")
        return method.decode(), request

    async def load_record(self, run_id: str) -> run_pb2.Run:
        """A run's record as stored, settled first if its owner's lease lapsed.

        While the run goes on, the stored record leaves its text to the log (`with_text`).
        """
        raw = await self.store.get(record_key(run_id))
        if raw is None:
            raise unknown_run(run_id)
        return await self.leases.settled_if_lapsed(run_pb2.Run.FromString(raw))

    async def with_text(self, record: run_pb2.Run) -> run_pb2.Run:
        """`record` with the text its run streamed so far, read from the log while it runs.

        Only the events the record counts (up to its `last_sequence`), so that a reader that
        shows this text and then watches after that sequence never sees a delta twice.
        """
        if record.status == run_pb2.RUN_STATUS_RUNNING and not record.partial_content:
            record.partial_content = await streamed_text(
                self.store, record.id, record.last_sequence
            )
        return record

    async def follow(self, run_id: str, after_sequence: int) -> AsyncGenerator[list[bytes]]:
        """Replay a run's stored events after `after_sequence`, then follow it until it ends.

        Each yield is the events one read found (never empty). While following, it holds a
        reader lease on the run (the owner will not orphan it), and it settles the run if its
        owner's lease lapses.

        Raises:
            NotFound: the run is unknown (or older than the retention).
            OutOfRange: events after `after_sequence` are no longer in the store.
        """
        async with self.store.subscribe(run_channel(run_id)) as announcements:
            changed = asyncio.Event()
            pump = asyncio.create_task(_set_on_each(announcements, changed))
            loop = asyncio.get_running_loop()
            leased = float("-inf")
            try:
                position = after_sequence
                while True:
                    changed.clear()
                    if loop.time() - leased >= self.lease_s / 3:
                        with contextlib.suppress(StoreError):
                            await self.leases.hold(run_id)
                            leased = loop.time()
                    if entries := await self.store.read(log_key(run_id), position):
                        position += len(entries)
                        yield entries
                    record = await self.load_record(run_id)
                    if record.status != run_pb2.RUN_STATUS_RUNNING:
                        if position < record.last_sequence and (
                            entries := await self.store.read(log_key(run_id), position)
                        ):
                            position += len(entries)
                            yield entries  # e.g. the event that settled it
                        if position < record.last_sequence:
                            raise OutOfRange(
                                f"run {run_id}: events after {position} are no longer retained"
                            )
                        return
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.recheck_s):
                            await changed.wait()
            finally:
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)


async def _set_on_each(messages: AsyncIterator[bytes], changed: asyncio.Event) -> None:
    with contextlib.suppress(StoreError):
        async for _ in messages:
            changed.set()
