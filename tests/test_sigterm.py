"""SIGTERM to a real server process with a stream in flight: drain within the grace, then stop."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2

from tests.helpers import assert_eventually, free_port, health_stub, read, read_rest, type_value
from tests.support.redis_server import RedisServer
from woolly_grpc._gen.woolly.v1 import agent_service_pb2, run_pb2
from woolly_grpc._gen.woolly.v1.agent_service_pb2_grpc import AgentServiceStub
from woolly_grpc.config import Settings
from woolly_grpc.testing import running_server

REQUEST = agent_service_pb2.StreamExecuteRequest(
    repository_name="calculator", agent_type=type_value("summarizer"), user_query="slowly"
)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@asynccontextmanager
async def serving_process(
    tmp_path: Path, *options: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`tests.support.slow_server` running `server.serve` on a free port, and its address.

    What it writes on stderr goes to `tmp_path / "stderr"`.
    """
    port = free_port()
    target = f"127.0.0.1:{port}"
    errors = (tmp_path / "stderr").open("wb")
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tests.support.slow_server", "--port", str(port)),
        *("--database-url", f"sqlite:///{tmp_path / 'woolly.db'}", *options),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=errors,
    )
    errors.close()
    try:
        async with aio.insecure_channel(target) as channel:
            health = health_stub(channel)

            async def serving() -> bool:
                try:
                    response = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                except aio.AioRpcError:
                    return False
                return bool(response.status == SERVING)

            await assert_eventually(serving, timeout=30)
        yield process, target
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_sigterm_lets_the_stream_in_flight_finish(tmp_path: Path) -> None:
    options = ("--cache-url", "memory://", "--chunks", "20", "--chunk-s", "0.05")
    async with (
        serving_process(tmp_path, *options, "--grace-s", "30") as (process, target),
        aio.insecure_channel(target) as channel,
    ):
        watch = health_stub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30)
        assert (await watch.read()).status == SERVING
        call = AgentServiceStub(channel).StreamExecute(REQUEST, timeout=30)
        assert (await read(call)).WhichOneof("event") == "started"
        assert (await read(call)).text_delta.text == "chunk 0. "

        process.send_signal(signal.SIGTERM)
        assert (await watch.read()).status == NOT_SERVING
        watch.cancel()

        async def new_calls_refused() -> bool:
            async with aio.insecure_channel(target) as fresh:
                try:
                    await AgentServiceStub(fresh).ListAgentTypes(
                        agent_service_pb2.ListAgentTypesRequest(), timeout=2
                    )
                except aio.AioRpcError as error:
                    return error.code() == grpc.StatusCode.UNAVAILABLE
            return False

        await assert_eventually(new_calls_refused)
        rest = await read_rest(call)
        code = await call.code()
        exit_code = await asyncio.wait_for(process.wait(), 30)

    assert code == grpc.StatusCode.OK
    assert rest[-1].completed.result.content == "".join(f"chunk {i}. " for i in range(20))
    assert exit_code == 0


async def test_runs_past_the_grace_end_cancelled_as_shutdown(
    tmp_path: Path, redis_server: RedisServer, settings: Settings
) -> None:
    """What is left when the grace ends is recorded CANCELLED (SHUTDOWN) in the shared store."""
    await redis_server.flush()
    options = ("--cache-url", redis_server.url, "--chunk-s", "0.02", "--grace-s", "0.5")
    async with (
        serving_process(tmp_path, *options) as (process, target),
        aio.insecure_channel(target) as channel,
    ):
        call = AgentServiceStub(channel).StreamExecute(REQUEST, timeout=30)
        run_id = (await read(call)).run_id
        await read(call)

        process.send_signal(signal.SIGTERM)
        with pytest.raises(aio.AioRpcError) as caught:
            await read_rest(call)
        exit_code = await asyncio.wait_for(process.wait(), 30)

    shared = settings.model_copy(update={"cache_url": redis_server.url})
    async with running_server(shared) as replica:
        run = (await replica.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=run_id))).run

    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    assert exit_code == 0
    assert run.status == run_pb2.RUN_STATUS_CANCELLED
    assert run.cancel_reason == run_pb2.CANCEL_REASON_SHUTDOWN
    assert run.partial_content.startswith("chunk 0. chunk 1. ")


async def test_a_second_signal_cuts_the_drain_short_and_stops_once(
    tmp_path: Path, redis_server: RedisServer, settings: Settings
) -> None:
    """SIGTERM, then SIGINT during a 30 s drain: the endless run is cancelled (SHUTDOWN) at
    once, shutdown runs once (nothing closed twice, no traceback), the process exits 0."""
    await redis_server.flush()
    options = ("--cache-url", redis_server.url, "--chunk-s", "0.02", "--grace-s", "30")
    async with (
        serving_process(tmp_path, *options) as (process, target),
        aio.insecure_channel(target) as channel,
    ):
        watch = health_stub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30)
        assert (await watch.read()).status == SERVING
        call = AgentServiceStub(channel).StreamExecute(REQUEST, timeout=60)
        run_id = (await read(call)).run_id
        await read(call)

        process.send_signal(signal.SIGTERM)
        assert (await watch.read()).status == NOT_SERVING  # draining now, for up to 30 s
        watch.cancel()
        process.send_signal(signal.SIGINT)
        with pytest.raises(aio.AioRpcError):
            await read_rest(call)
        exit_code = await asyncio.wait_for(process.wait(), 20)  # well inside the 30 s grace

    shared = settings.model_copy(update={"cache_url": redis_server.url})
    async with running_server(shared) as replica:
        run = (await replica.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=run_id))).run
    errors = (tmp_path / "stderr").read_text()

    assert exit_code == 0 and "Traceback" not in errors, errors
    assert run.status == run_pb2.RUN_STATUS_CANCELLED
    assert run.cancel_reason == run_pb2.CANCEL_REASON_SHUTDOWN
