"""RunManager on its own (no gRPC): the edges the servicer cannot easily reach."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

import pytest

from woolly_grpc._gen.woolly.v1 import agent_service_pb2, run_pb2
from woolly_grpc.config import Settings
from woolly_grpc.core import AgentType, Event, Started, TextDelta, UsageMeter
from woolly_grpc.runs import RunJournal, RunManager
from woolly_grpc.runs.keys import log_key, record_key
from woolly_grpc.store import MemoryStore
from woolly_grpc.store.base import Append, Claim, Put, Write


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


async def start(
    runs: RunManager, *, flight_key: str | None = None, detach: bool = False
) -> tuple[str, bool]:
    return await runs.start(
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


class RecordingStore(MemoryStore):
    """Keeps every log append and record the journal writes; `appended` is set at five appends."""

    def __init__(self) -> None:
        super().__init__()
        self.appends: list[Append] = []
        self.records: list[run_pb2.Run] = []
        self.requests = 0
        self.appended = asyncio.Event()

    async def write(self, batch: Sequence[Write]) -> list[bool]:
        self.appends += [op for op in batch if isinstance(op, Append) and op.entries]
        self.records += [
            run_pb2.Run.FromString(op.value)
            for op in batch
            if isinstance(op, Put) and op.key.startswith("run:") and op.key.endswith("}")
        ]
        self.requests += sum(isinstance(op, Put) and op.key.endswith(":request") for op in batch)
        if len(self.appends) >= 5:
            self.appended.set()
        return await super().write(batch)


async def run_past_five_writes(store: RecordingStore) -> str:
    """A run whose deltas (10 ms apart) took five writes (50 ms apart), cancelled, all stored."""
    runs = RunManager(journal(store), Settings(max_concurrent_runs=1, orphan_grace_s=0))
    await runs.open()
    run_id, _ = await start(runs)
    await store.appended.wait()
    await runs.cancel(run_id, run_pb2.CANCEL_REASON_EXPLICIT, tenant="")
    await runs.stored(run_id)
    await runs.close()
    return run_id


async def test_a_runs_log_and_request_get_their_expiry_on_its_first_and_last_write() -> None:
    """Each flush in between is one command less on Redis, the log never lacks an expiry, and
    the request (for RetryRun) lives as long as the record, however long the run took."""
    store = RecordingStore()
    run_id = await run_past_five_writes(store)

    renewed = [append.renew for append in store.appends]
    assert renewed[0] and renewed[-1], "when the log is created and when the run ends"
    assert not any(renewed[1:-1]), f"no renewal in between: {renewed}"
    assert {append.ttl_s for append in store.appends} == {60}, "the retention"
    assert store.requests == 2, "the request, with the first record and with the final one"
    assert sum(len(append.entries) for append in store.appends) == len(
        await store.read(log_key(run_id))
    ), "every event was written"


async def test_a_running_runs_record_leaves_its_text_to_the_log() -> None:
    """Rewriting the text so far at every write would cost a long answer's length squared."""
    store = RecordingStore()
    run_id = await run_past_five_writes(store)

    *going, final = store.records
    assert len(going) >= 4 and all(r.status == run_pb2.RUN_STATUS_RUNNING for r in going)
    assert {r.partial_content for r in going} == {""}
    assert final.status == run_pb2.RUN_STATUS_CANCELLED
    assert final.partial_content.startswith("more more more ")
    # Any replica still reads a running run's text, from the log: the text of the events that
    # record counts, not of later ones (a WatchRun after its last_sequence must not repeat any).
    fresh = journal(store)
    await store.set(record_key(run_id), going[-1].SerializeToString(), ttl_s=60)
    record = await fresh.with_text(await fresh.load_record(run_id))
    assert record.last_sequence < final.last_sequence
    assert record.partial_content == "more " * (record.last_sequence - 1)  # after `started`
