"""RunManager on its own (no gRPC): the edges the servicer cannot easily reach."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

import pytest

from woolly_grpc._gen.woolly.v1 import agent_service_pb2, run_pb2
from woolly_grpc.config import Settings
from woolly_grpc.core import AgentType, Event, Started, TextDelta, UsageMeter
from woolly_grpc.runs import RunJournal, RunManager
from woolly_grpc.runs.keys import log_key
from woolly_grpc.store import MemoryStore
from woolly_grpc.store.base import Append, Claim, Write


class SlowBeginStore(MemoryStore):
    """Holds the first write of a new run (its lease, record and request) until let go."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.holding = asyncio.Event()

    async def write(self, batch: Sequence[Write]) -> list[bool]:
        if any(isinstance(op, Claim) for op in batch) and not self.release.is_set():
            self.holding.set()
            await self.release.wait()
        return await super().write(batch)


async def endless(meter: UsageMeter) -> AsyncGenerator[Event]:
    yield Started(model="test", agent_type=AgentType.SUMMARIZER)
    while True:
        yield TextDelta("more ", agent_type=AgentType.SUMMARIZER)
        await asyncio.sleep(0.01)


def journal(store: MemoryStore) -> RunJournal:
    return RunJournal(
        store, replica="test", retention_s=60, lease_s=10, linger_s=0.05, recheck_s=1.0
    )


def start(runs: RunManager, *, flight_key: str | None = None, detach: bool = False):
    return runs.start(
        method="StreamExecute",
        request=agent_service_pb2.StreamExecuteRequest(),
        repository="r",
        agent_types=[AgentType.SUMMARIZER],
        events=endless,
        tenant="",
        flight_key=flight_key,
        detach=detach,
    )


async def test_a_start_cancelled_while_its_record_is_written_leaves_nothing() -> None:
    """The caller went away while the record was being written: no run, no slot, no flight."""
    store = SlowBeginStore()
    runs = RunManager(journal(store), Settings(max_concurrent_runs=1, orphan_grace_s=0))
    starting = asyncio.create_task(start(runs, flight_key="k"))
    await store.holding.wait()

    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting

    assert runs.active == 0, "its concurrency slot is free again"
    store.release.set()
    again, joined = await start(runs, flight_key="k")
    assert not joined, "nobody joins a run that never started"
    await runs.cancel(again, run_pb2.CANCEL_REASON_EXPLICIT, tenant="")
    await runs.close()


async def test_a_detached_caller_joining_a_run_keeps_it_going() -> None:
    runs = RunManager(journal(MemoryStore()), Settings(max_concurrent_runs=4, orphan_grace_s=0))
    run_id, _ = await start(runs, flight_key="same")
    joined_id, joined = await start(runs, flight_key="same", detach=True)
    assert joined and joined_id == run_id

    runs.abandon(run_id, run_pb2.CANCEL_REASON_CLIENT)  # every caller has gone
    follower = runs.follow(run_id)
    seen = [await anext(follower) for _ in range(5)]  # it keeps producing events

    assert len(seen) == 5
    assert (await runs.get(run_id, tenant="")).status == run_pb2.RUN_STATUS_RUNNING
    await follower.aclose()
    await runs.cancel(run_id, run_pb2.CANCEL_REASON_EXPLICIT, tenant="")
    await runs.close()


class AppendRecordingStore(MemoryStore):
    """Keeps every log append the journal writes; `appended` is set once there are five."""

    def __init__(self) -> None:
        super().__init__()
        self.appends: list[Append] = []
        self.appended = asyncio.Event()

    async def write(self, batch: Sequence[Write]) -> list[bool]:
        self.appends += [op for op in batch if isinstance(op, Append) and op.entries]
        if len(self.appends) >= 5:
            self.appended.set()
        return await super().write(batch)


async def test_a_runs_log_gets_its_expiry_on_its_first_write_and_its_last_only() -> None:
    """Each flush in between is one command less on Redis, and the log never lacks an expiry."""
    store = AppendRecordingStore()
    runs = RunManager(journal(store), Settings(max_concurrent_runs=1, orphan_grace_s=0))
    await runs.open()
    run_id, _ = await start(runs)
    await store.appended.wait()  # five flushes, 50 ms apart, of deltas 10 ms apart

    await runs.cancel(run_id, run_pb2.CANCEL_REASON_EXPLICIT, tenant="")
    await runs.stored(run_id)
    await runs.close()

    ttls = [append.ttl_s for append in store.appends]
    assert ttls[0] == ttls[-1] == 60, "the retention, when the log is created and when it ends"
    assert set(ttls[1:-1]) == {None}, f"no renewal in between: {ttls}"
    assert sum(len(append.entries) for append in store.appends) == len(
        await store.read(log_key(run_id))
    ), "every event was written"
