"""Two server processes sharing one real redis-server: runs are visible from either replica."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc import aio

from tests.helpers import assert_eventually, assert_sequences, read, read_rest, type_value
from tests.support.redis_server import RedisServer, running_redis
from woolly_grpc._gen.woolly.v1 import agent_service_pb2, run_pb2
from woolly_grpc._gen.woolly.v1.agent_service_pb2_grpc import AgentServiceStub
from woolly_grpc.config import Settings
from woolly_grpc.runs.keys import log_key
from woolly_grpc.testing import running_server


@pytest.fixture
async def shared_redis() -> AsyncIterator[RedisServer]:
    async with running_redis() as server:
        yield server


async def start_replica_process(
    cache_url: str, *options: str
) -> tuple[asyncio.subprocess.Process, int]:
    """`tests.support.slow_server` (a replica whose model streams slowly) and its port."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.slow_server", "--cache-url", cache_url, *options,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
    assert line.strip().isdigit(), f"replica did not start: {line!r}"
    return process, int(line)


async def test_a_run_on_one_replica_is_watched_and_cancelled_from_another(
    settings: Settings, shared_redis: RedisServer
) -> None:
    replica_a, port = await start_replica_process(shared_redis.url)
    try:
        async with (
            aio.insecure_channel(f"127.0.0.1:{port}") as channel_a,
            running_server(settings.model_copy(update={"cache_url": shared_redis.url})) as b,
        ):
            request = agent_service_pb2.StreamExecuteRequest(
                repository_name="calculator", agent_type=type_value("summarizer"), user_query="go"
            )
            on_a = AgentServiceStub(channel_a).StreamExecute(request, timeout=60)
            run_id = (await read(on_a)).run_id
            await read(on_a)  # the first chunk

            watch = b.stub.WatchRun(agent_service_pb2.WatchRunRequest(run_id=run_id), timeout=60)
            first = [await read(watch), await read(watch)]
            assert first[0].started.model and first[1].text_delta.text == "chunk 0. "
            running = (await b.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=run_id))).run
            assert running.status == run_pb2.RUN_STATUS_RUNNING

            cancelled = (
                await b.stub.CancelRun(agent_service_pb2.CancelRunRequest(run_id=run_id))
            ).run

            assert cancelled.status == run_pb2.RUN_STATUS_CANCELLED
            assert cancelled.cancel_reason == run_pb2.CANCEL_REASON_EXPLICIT
            rest = await read_rest(watch)
            assert rest[-1].cancelled.reason == run_pb2.CANCEL_REASON_EXPLICIT
            assert_sequences(first + rest)  # no repeat
            with pytest.raises(aio.AioRpcError) as caught:
                await read_rest(on_a)
            assert caught.value.code() == grpc.StatusCode.CANCELLED
    finally:
        replica_a.terminate()
        await replica_a.wait()


async def test_a_lost_log_is_out_of_range_not_a_silent_gap(
    settings: Settings, shared_redis: RedisServer
) -> None:
    shared = settings.model_copy(update={"cache_url": shared_redis.url})
    async with running_server(shared) as a, running_server(shared) as b:
        request = agent_service_pb2.ExecuteRequest(
            repository_name="calculator", agent_type=type_value("summarizer"), user_query="lose"
        )
        run_id = (await a.stub.Execute(request, timeout=30)).run_id

        async def stored() -> bool:
            return len(await b.app.runs.journal.store.read(log_key(run_id))) > 0

        await assert_eventually(stored)
        replay = [
            m async for m in b.stub.WatchRun(agent_service_pb2.WatchRunRequest(run_id=run_id))
        ]
        assert replay[-1].WhichOneof("event") == "completed"

        async with shared_redis.client() as redis:
            await redis.delete(f"woolly:{log_key(run_id)}")  # the store's prefix, then its key
        with pytest.raises(aio.AioRpcError) as caught:
            await read_rest(b.stub.WatchRun(agent_service_pb2.WatchRunRequest(run_id=run_id)))
        assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
