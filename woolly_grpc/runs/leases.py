"""Leases on runs, in keys that expire, and settling a run whose owner stopped.

- the owner's: `claim`ed with the record before the caller sees `started`, renewed while the run
  executes. A reader that finds a RUNNING record without it settles the run FAILED (UNAVAILABLE,
  "the replica running this run stopped") — once its own view of the store has been steady for a
  lease: a store that was away made every lease look lapsed.
- the readers': a watcher on another replica keeps `run:{ID}:watched` alive; the owner reads it
  before cancelling a run whose own callers left (no message that could be lost).
"""

from __future__ import annotations

import logging

from google.rpc import code_pb2

from woolly_grpc._gen.woolly.v1 import agent_service_pb2, run_pb2
from woolly_grpc.store import Store
from woolly_grpc.store.base import Append, Claim, Publish, Put

from .keys import log_key, owner_key, record_key, run_channel, streamed_text, watched_key

_log = logging.getLogger(__name__)

SETTLED = "settled"
"""The owner lease's holder once a run is settled for an owner that stopped."""
OWNER_STOPPED = "the replica running this run stopped"


class Leases:
    """The owner's and the readers' leases on runs (see the module docstring).

    Args:
        store: The shared store.
        replica: This replica's id: the holder of the owner leases of its runs.
        lease_s: How long an owner or reader lease lasts unless renewed.
        retention_s: How long a run settled here is kept.
    """

    def __init__(self, store: Store, *, replica: str, lease_s: float, retention_s: float) -> None:
        self.store = store
        self.replica = replica
        self.lease_s = lease_s
        self.retention_s = retention_s
        self.lapsed_settled = 0
        """Other replicas' runs this one settled FAILED since start, their leases lapsed."""

    def claim(self, run_id: str) -> Claim:
        """The write that takes or renews this replica's owner lease on a run."""
        return Claim(owner_key(run_id), self.replica, self.lease_s)

    async def hold(self, run_id: str) -> None:
        """Take or renew a reader lease on a run (StoreError if the store is away)."""
        await self.store.set(watched_key(run_id), b"", ttl_s=self.lease_s)

    async def watched(self, run_id: str) -> bool:
        """Whether a reader on another replica holds a lease on the run."""
        return await self.store.get(watched_key(run_id)) is not None

    async def settled_if_lapsed(self, record: run_pb2.Run) -> run_pb2.Run:
        """A RUNNING record whose owner's lease lapsed, settled FAILED; others as they are."""
        if record.status != run_pb2.RUN_STATUS_RUNNING:
            return record
        if self.store.steady_s() < self.lease_s:
            return record  # our own view of the store is too fresh to judge its leases
        owner = owner_key(record.id)
        if await self.store.get(owner) is not None:
            return record
        if not await self.store.claim(owner, SETTLED, ttl_s=self.retention_s):
            return record  # the owner came back in time, or another replica is settling
        settled = run_pb2.Run()
        settled.CopyFrom(record)
        # Kept when a run fails midway: the text of the events the record counts.
        settled.partial_content = await streamed_text(self.store, record.id, record.last_sequence)
        settled.status = run_pb2.RUN_STATUS_FAILED
        settled.error.CopyFrom(run_pb2.RunError(code=code_pb2.UNAVAILABLE, message=OWNER_STOPPED))
        settled.last_sequence = record.last_sequence + 1
        settled.end_time.GetCurrentTime()
        failed = agent_service_pb2.WatchRunResponse(
            run_id=record.id,
            sequence=settled.last_sequence,
            failed=run_pb2.RunFailed(code=code_pb2.UNAVAILABLE, message=OWNER_STOPPED),
        )
        ttl = self.retention_s
        await self.store.write(
            [
                Append(log_key(record.id), [failed.SerializeToString()], ttl),
                Put(record_key(record.id), settled.SerializeToString(), ttl),
                Publish(run_channel(record.id), str(settled.last_sequence).encode()),
            ]
        )
        self.lapsed_settled += 1
        _log.warning("run %s settled FAILED: %s", record.id, OWNER_STOPPED)
        return settled
