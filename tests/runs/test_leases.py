"""Runs that survive faults, with real processes on loopback: a replica SIGKILLed, Redis
SIGSTOPped, a watcher killed, reads on another replica right after `started`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tests.helpers import assert_eventually, read, read_rest, streamed_text, type_value
from tests.runs.test_replicas import start_replica_process
from tests.support.redis_server import RedisServer, running_redis, with_options
from woolly_grpc._gen.woolly.v1 import agent_service_pb2, run_pb2
from woolly_grpc._gen.woolly.v1.agent_service_pb2_grpc import AgentServiceStub
from woolly_grpc.config import Settings
from woolly_grpc.runs.leases import OWNER_STOPPED
from woolly_grpc.testing import RunningServer, running_server

S = grpc.StatusCode
LEASE_S = 1.0


@pytest.fixture
async def shared_redis() -> AsyncIterator[RedisServer]:
    async with running_redis() as server:
        yield server


def stream_request(query: str = "go") -> agent_service_pb2.StreamExecuteRequest:
    return agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator", agent_type=type_value("summarizer"), user_query=query
    )


def chain_request() -> agent_service_pb2.ExecuteChainRequest:
    return agent_service_pb2.ExecuteChainRequest(
        repository_name="calculator",
        agent_chain=[type_value("summarizer"), type_value("tester")],
        user_query="review",
    )


def metric(srv: RunningServer, name: str) -> float:
    """A metric's value on a server, as /metrics would show it."""
    value = srv.app.metrics.registry.get_sample_value(name)
    assert value is not None, f"{name} is not exported"
    return value


def get_run(srv: RunningServer, run_id: str) -> Any:
    return srv.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=run_id), timeout=10)


async def endless(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    """A model that streams a chunk every 20 ms until its run is stopped."""
    chunk = 0
    while True:
        yield f"chunk {chunk}. "
        chunk += 1
        await asyncio.sleep(0.02)


async def test_a_killed_replicas_chain_fails_unavailable_everywhere_and_can_be_retried(
    settings: Settings, shared_redis: RedisServer
) -> None:
    """SIGKILL the replica running a chain: a watcher elsewhere ends within lease + 5 s with
    UNAVAILABLE, GetRun says FAILED, RetryRun starts a new run."""
    lease = ("--lease-s", str(LEASE_S))
    owner, port = await start_replica_process(shared_redis.url, *lease)
    update = {"cache_url": shared_redis.url, "run_lease_s": LEASE_S}
    try:
        async with (
            aio.insecure_channel(f"127.0.0.1:{port}") as channel,
            running_server(settings.model_copy(update=update)) as other,
        ):
            on_owner = AgentServiceStub(channel).ExecuteChain(chain_request(), timeout=60)
            run_id = (await read(on_owner)).run_id
            watch = other.stub.WatchRun(agent_service_pb2.WatchRunRequest(run_id=run_id))
            assert (await read(watch)).WhichOneof("event") == "started"

            owner.send_signal(signal.SIGKILL)
            await owner.wait()
            async with asyncio.timeout(LEASE_S + 5):
                rest = await read_rest(watch)
            run = (await get_run(other, run_id)).run
            retried = await other.stub.RetryRun(
                agent_service_pb2.RetryRunRequest(run_id=run_id), timeout=10
            )
    finally:
        if owner.returncode is None:
            owner.kill()
            await owner.wait()

    assert rest[-1].failed.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert rest[-1].failed.message == OWNER_STOPPED
    assert await watch.code() == S.OK
    assert run.status == run_pb2.RUN_STATUS_FAILED and run.error.message == OWNER_STOPPED
    assert retried.run.id != run_id


async def test_the_other_replica_knows_a_run_as_soon_as_its_caller_does(
    settings: Settings, shared_redis: RedisServer
) -> None:
    """GetRun, WatchRun and CancelRun on the other replica right after `started`: 0 NOT_FOUND.

    This holds while Redis answers; 200 runs in one test process can starve the event loop past
    the default 0.25 s per-operation bound, which is an outage (tested below), so the bound is wide.
    """
    await shared_redis.flush()
    shared = settings.model_copy(
        update={"cache_url": with_options(shared_redis.url, op_timeout_s=10)}
    )
    async with running_server(shared) as owner, running_server(shared) as other:
        not_found = 0

        async def one(i: int) -> None:
            nonlocal not_found
            call = owner.stub.StreamExecute(stream_request(f"visible {i}"), timeout=30)
            run_id = (await read(call)).run_id
            try:
                if i % 4 == 1:
                    watch = other.stub.WatchRun(agent_service_pb2.WatchRunRequest(run_id=run_id))
                    await read(watch)
                    watch.cancel()
                elif i % 4 == 2:
                    cancel = agent_service_pb2.CancelRunRequest(run_id=run_id)
                    await other.stub.CancelRun(cancel, timeout=20)
                else:
                    await get_run(other, run_id)
            except aio.AioRpcError as error:
                if error.code() == S.NOT_FOUND:
                    not_found += 1
                else:
                    raise
            with contextlib.suppress(aio.AioRpcError):
                await read_rest(call)

        for batch in range(10):
            await asyncio.gather(*(one(batch * 20 + i) for i in range(20)))

    assert not_found == 0


async def test_the_other_replica_knows_a_runs_end_as_soon_as_its_caller_does(
    settings: Settings, shared_redis: RedisServer
) -> None:
    """GetRun on the other replica right after the caller read `completed` (StreamExecute) or
    got its response (Execute): SUCCEEDED every time (before, RUNNING until the owner's journal
    wrote the end, up to WOOLLY_RUN_LOG_LINGER_S later). The bound is wide as above."""
    await shared_redis.flush()
    shared = settings.model_copy(
        update={"cache_url": with_options(shared_redis.url, op_timeout_s=10)}
    )
    async with running_server(shared) as owner, running_server(shared) as other:

        async def streamed(i: int) -> int:
            call = owner.stub.StreamExecute(stream_request(f"ended {i}"), timeout=30)
            messages = await read_rest(call)
            assert messages[-1].WhichOneof("event") == "completed"
            return int((await get_run(other, messages[0].run_id)).run.status)

        async def executed(i: int) -> int:
            request = agent_service_pb2.ExecuteRequest(
                repository_name="calculator", agent_type=type_value("summarizer"), user_query=f"{i}"
            )
            response = await owner.stub.Execute(request, timeout=30)
            return int((await get_run(other, response.run_id)).run.status)

        statuses = []
        for batch in range(5):
            statuses += await asyncio.gather(*(streamed(batch * 20 + i) for i in range(10)))
            statuses += await asyncio.gather(*(executed(batch * 20 + i) for i in range(10)))

    assert statuses == [run_pb2.RUN_STATUS_SUCCEEDED] * 100


async def test_a_watcher_that_dies_without_a_word_lets_the_orphan_go(
    settings: Settings, shared_redis: RedisServer
) -> None:
    """A lost `detach`: the replica watching a run is SIGKILLed after the run's caller left.
    Its reader lease lapses and the owner cancels the orphan (before: it ran forever)."""
    lease = ("--lease-s", str(LEASE_S))
    watcher, port = await start_replica_process(shared_redis.url, *lease)
    update = {"cache_url": shared_redis.url, "run_lease_s": LEASE_S, "orphan_grace_s": 0.5}
    try:
        async with (
            running_server(
                settings.model_copy(update=update), model=FunctionModel(stream_function=endless)
            ) as owner,
            aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            call = owner.stub.StreamExecute(stream_request("orphan"), timeout=60)
            run_id = (await read(call)).run_id
            watch = AgentServiceStub(channel).WatchRun(
                agent_service_pb2.WatchRunRequest(run_id=run_id)
            )
            await read(watch)
            call.cancel()  # the caller leaves; only the watcher elsewhere keeps the run
            watcher.send_signal(signal.SIGKILL)
            await watcher.wait()

            async def cancelled() -> bool:
                run = (await get_run(owner, run_id)).run
                return bool(run.status == run_pb2.RUN_STATUS_CANCELLED)

            await assert_eventually(cancelled, timeout=0.5 + 2 * LEASE_S + 5)
            run = (await get_run(owner, run_id)).run
    finally:
        if watcher.returncode is None:
            watcher.kill()
            await watcher.wait()

    assert run.cancel_reason == run_pb2.CANCEL_REASON_CLIENT


async def test_a_run_watched_from_another_replica_outlives_its_callers_grace(
    settings: Settings, shared_redis: RedisServer
) -> None:
    """A lost `attach` used to cancel a run someone watched: now the watcher's lease keeps it.
    The caller leaves; events keep reaching the watcher long past the grace and two leases."""
    update = {"cache_url": shared_redis.url, "run_lease_s": LEASE_S, "orphan_grace_s": 0.2}
    shared = settings.model_copy(update=update)
    model = FunctionModel(stream_function=endless)
    async with running_server(shared, model=model) as owner, running_server(shared) as other:
        call = owner.stub.StreamExecute(stream_request("watched"), timeout=60)
        run_id = (await read(call)).run_id
        watch = other.stub.WatchRun(agent_service_pb2.WatchRunRequest(run_id=run_id))
        await read(watch)
        call.cancel()
        # 0.2 s grace + two 1 s leases is about 110 chunks at 20 ms: read 150 (a remote
        # watcher gets each journal write's chunks merged, so count chunks, not messages).
        chunks = [await read(watch)]
        while streamed_text(chunks).count("chunk ") < 150:
            chunks.append(await read(watch))
        running = (await get_run(owner, run_id)).run
        watch.cancel()

    assert all(m.WhichOneof("event") == "text_delta" for m in chunks)
    assert running.status == run_pb2.RUN_STATUS_RUNNING


@pytest.mark.timeout(150)
@pytest.mark.parametrize("stall_s", [15, 60])
async def test_runs_ending_during_a_long_redis_stall_are_settled_everywhere_after_it(
    settings: Settings, caplog: pytest.LogCaptureFixture, stall_s: int
) -> None:
    """Redis SIGSTOPped for 15 s / 60 s while runs start and end on two replicas: afterwards
    every run is visible and settled on both (0 NOT_FOUND, 0 stuck RUNNING), and each replica
    logged one WARNING when the outage began and one when it ended."""
    gate = asyncio.Event()

    async def gated(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        yield "before. "
        await gate.wait()
        yield "after."

    caplog.set_level(logging.WARNING, logger="woolly_grpc.runs.writer")
    async with running_redis() as redis:
        shared = settings.model_copy(update={"cache_url": redis.url, "orphan_grace_s": 30})
        model = FunctionModel(stream_function=gated)
        async with running_server(shared, model=model) as a, running_server(shared) as b:
            # Runs that began before the stall and end during it, one per replica.
            calls = [a.stub.StreamExecute(stream_request(f"long {i}"), timeout=200) for i in (0, 1)]
            long_ids = [(await read(call)).run_id for call in calls]
            redis.pause()
            try:
                gate.set()
                for call in calls:
                    await read_rest(call)
                # Runs that start and end during the stall, on both replicas.
                during = [
                    await srv.stub.Execute(
                        agent_service_pb2.ExecuteRequest(
                            repository_name="calculator",
                            agent_type=type_value("summarizer"),
                            user_query=f"during {srv.app.port} {i}",
                        ),
                        timeout=60,
                    )
                    for srv in (a, b)
                    for i in range(5)
                ]
                await asyncio.sleep(stall_s)  # the stall itself: what this test is about
            finally:
                redis.resume()

            async def written() -> bool:
                return all(srv.app.runs.journal.writer.backlog == 0 for srv in (a, b))

            await assert_eventually(written, timeout=30)
            run_ids = long_ids + [r.run_id for r in during]
            seen = [(await get_run(srv, i)).run for srv in (a, b) for i in run_ids]
            failed_writes = [metric(srv, "run_store_write_failures_total") for srv in (a, b)]
            backlogs = [metric(srv, "run_store_backlog_runs") for srv in (a, b)]

    assert len(seen) == 2 * 12
    assert all(run.status == run_pb2.RUN_STATUS_SUCCEEDED for run in seen), [
        run_pb2.RunStatus.Name(r.status) for r in seen
    ]
    began = [r for r in caplog.records if "run store unreachable" in r.getMessage()]
    ended = [r for r in caplog.records if "run store reachable again" in r.getMessage()]
    assert len(began) == len(ended) == 2, "one pair per replica, not one per run per retry"
    assert all(count >= 1 for count in failed_writes) and backlogs == [0, 0]


async def test_runs_past_the_outage_buffer_keep_their_result_and_readers_learn_of_the_gap(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """With no room to keep events through an outage, ended runs keep their final record: after
    it GetRun elsewhere says SUCCEEDED with the answer, WatchRun from the start says OUT_OF_RANGE
    (not a silent gap, not a hang), and the log says how many events went."""
    caplog.set_level(logging.WARNING, logger="woolly_grpc.runs.writer")
    async with running_redis() as redis:
        shared = settings.model_copy(update={"cache_url": redis.url})
        update = {"run_outage_buffer_bytes": 0}
        async with (
            running_server(shared.model_copy(update=update)) as a,
            running_server(shared) as b,
        ):
            redis.pause()
            try:
                during = [
                    await a.stub.Execute(
                        agent_service_pb2.ExecuteRequest(
                            repository_name="calculator",
                            agent_type=type_value("summarizer"),
                            user_query=f"buffer {i}",
                        ),
                        timeout=60,
                    )
                    for i in range(3)
                ]
            finally:
                redis.resume()

            async def written() -> bool:
                return a.app.runs.journal.writer.backlog == 0

            await assert_eventually(written, timeout=30)
            runs = [(await get_run(b, r.run_id)).run for r in during]
            dropped = metric(a, "run_store_dropped_events_total")
            codes = []
            for r in during:
                watch = b.stub.WatchRun(agent_service_pb2.WatchRunRequest(run_id=r.run_id))
                with pytest.raises(aio.AioRpcError) as caught:
                    await read_rest(watch)
                codes.append(caught.value.code())

    assert [run.status for run in runs] == [run_pb2.RUN_STATUS_SUCCEEDED] * 3
    assert [run.results[0].content for run in runs] == [r.result.content for r in during]
    assert codes == [S.OUT_OF_RANGE] * 3
    said = [r.getMessage() for r in caplog.records if "events dropped" in r.getMessage()]
    assert len(said) == 3
    assert dropped == sum(int(line.split(": ")[1].split()[0]) for line in said) > 0
