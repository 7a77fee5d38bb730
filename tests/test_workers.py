"""`WOOLLY_WORKERS=2`: real `woolly-grpc serve` processes sharing one port, Redis and /metrics.

Connections land on either worker (SO_REUSEPORT spreads them by their addresses); which one
answered is read from the access log, whose lines each worker tags `worker-N`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio
from pydantic import ValidationError

from tests.helpers import assert_eventually, free_port, read, read_rest, scrape_metrics, type_value
from tests.support.cli import run_cli, serving
from tests.support.openai_server import running_openai_server
from tests.support.redis_server import RedisServer
from woolly_grpc._gen.woolly.v1 import agent_service_pb2, run_pb2
from woolly_grpc._gen.woolly.v1.agent_service_pb2_grpc import AgentServiceStub
from woolly_grpc.config import Settings

pytestmark = pytest.mark.timeout(180)

CONNECTIONS = 24
"""Fresh connections per check: all on one worker by chance has odds of 2 in 2^24."""
_ACCESS = re.compile(r" worker-(\d) woolly_grpc\.access: rpc /woolly\.v1\.AgentService/(\w+) OK")


def flags(repos_root: Path, tmp_path: Path, redis: RedisServer) -> tuple[str, ...]:
    return (
        *("--repos-root", str(repos_root), "--database-url", f"sqlite:///{tmp_path / 'a.db'}"),
        *("--cache-url", redis.url),
    )


def stream_request(query: str) -> agent_service_pb2.StreamExecuteRequest:
    return agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator", agent_type=type_value("summarizer"), user_query=query
    )


@contextlib.asynccontextmanager
async def fresh_stub(address: str) -> AsyncIterator[AgentServiceStub]:
    """A stub on a connection of its own (no subchannel shared with other channels)."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with aio.insecure_channel(address, options=options) as channel:
        yield AgentServiceStub(channel)


def answered_by(log: list[str]) -> dict[str, set[str]]:
    """The workers (`1`, `2`) that answered each method OK, from the access log."""
    workers: dict[str, set[str]] = defaultdict(set)
    for line in log:
        if found := _ACCESS.search(line):
            method = found.group(2) + (" hit" if "cache=hit" in line else "")
            workers[method].add(found.group(1))
    return workers


def ok_lines(log: list[str], method: str) -> int:
    return sum(1 for line in log if f"AgentService/{method} OK" in line and " worker-" in line)


def test_more_than_one_worker_needs_a_shared_store(repos_root: Path) -> None:
    with pytest.raises(ValidationError, match="WOOLLY_WORKERS=2 needs a shared WOOLLY_CACHE_URL"):
        Settings(repos_root=repos_root, workers=2)
    assert Settings(repos_root=repos_root, workers=2, cache_url="redis://redis:6379/0").workers == 2


async def test_two_workers_share_runs_cache_and_metrics(
    repos_root: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    """A run streamed on one connection is read (GetRun), replayed (WatchRun) and answered from
    the cache (StreamExecute hit) over fresh connections that both workers answer, and the
    supervisor's /metrics counts the calls of both together."""
    await redis_server.flush()
    metrics_port = free_port()
    options = (*flags(repos_root, tmp_path, redis_server), "--metrics-port", str(metrics_port))
    request = stream_request("What does this code do?")
    async with serving(*options, env={}, workers=2) as served:
        async with fresh_stub(served.address) as stub:
            first = [m async for m in stub.StreamExecute(request, timeout=30)]
        run_id = first[0].run_id
        asked: list[str] = []  # a GetRun each

        for _ in range(CONNECTIONS):
            async with fresh_stub(served.address) as stub:
                # The run's end reached Redis before its caller's `completed`: every worker
                # says SUCCEEDED at once.
                assert await succeeded(stub, run_id, asked)
                watch = stub.WatchRun(agent_service_pb2.WatchRunRequest(run_id=run_id), timeout=10)
                watched = [m async for m in watch]
                call = stub.StreamExecute(request, timeout=10)
                replayed = [m async for m in call]
                cache = dict(await call.trailing_metadata())["woolly-cache"]

            assert watched[-1].completed.result.content == first[-1].completed.result.content
            assert [m.sequence for m in watched][-1] == first[-1].sequence
            assert cache == "hit"
            assert {m.run_id for m in replayed} == {run_id}, "a hit replays the run, no new one"
            assert replayed[-1].completed.result.cached

        await assert_eventually(lambda: ok_lines(served.log, "GetRun") == len(asked))
        await assert_eventually(lambda: ok_lines(served.log, "StreamExecute") == CONNECTIONS + 1)

        async def counted_together() -> bool:
            scrape = await scrape_metrics(metrics_port)
            handled = "grpc_server_handled_total"
            return (
                scrape.get(handled, **_labels("GetRun", "unary")) == len(asked)
                and scrape.get(handled, **_labels("StreamExecute", "server_stream"))
                == CONNECTIONS + 1
                and scrape.get("cache_hits_total", agent_type="summarizer") == CONNECTIONS
                and scrape.get("cache_misses_total", agent_type="summarizer") == 1
                and scrape.get("agent_requests_total", agent_type="summarizer", status="succeeded")
                == 1
                # Read at scrape time in each worker, copied for the supervisor within a second:
                and {"cache_store_failing", "run_store_backlog_runs"} <= set(scrape.families)
            )

        await assert_eventually(counted_together)
        scrape = await scrape_metrics(metrics_port)

    workers = answered_by(served.log)
    assert workers["GetRun"] == workers["WatchRun"] == workers["StreamExecute hit"] == {"1", "2"}
    assert scrape.get("active_agents") == 0 and scrape.get("cache_store_failing") == 0
    assert await served.process.wait() == 0


async def succeeded(stub: AgentServiceStub, run_id: str, asked: list[str]) -> bool:
    asked.append(run_id)
    got = await stub.GetRun(agent_service_pb2.GetRunRequest(run_id=run_id), timeout=10)
    return bool(got.run.status == run_pb2.RUN_STATUS_SUCCEEDED)


def _labels(method: str, kind: str) -> dict[str, str]:
    return {
        "grpc_type": kind,
        "grpc_service": "woolly.v1.AgentService",
        "grpc_method": method,
        "grpc_code": "OK",
    }


async def test_sigterm_drains_every_worker(
    repos_root: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Streams in flight on both workers when the supervisor gets SIGTERM all finish OK; then
    every worker and the supervisor exit 0."""
    async with running_openai_server() as openai:
        env = {"OPENAI_BASE_URL": openai.url, "OPENAI_API_KEY": "unused"}
        options = (*flags(repos_root, tmp_path, redis_server), "--model", "openai-chat:gpt-test")
        async with (
            serving(*options, env=env, workers=2) as served,
            contextlib.AsyncExitStack() as stack,
        ):
            calls = []
            for index in range(CONNECTIONS):
                stub = await stack.enter_async_context(fresh_stub(served.address))
                query = f"what does it do? !chunks=20 !pace=0.05 !id=drain-{index}"
                call = stub.StreamExecute(stream_request(query), timeout=60)
                assert (await read(call)).WhichOneof("event") == "started"
                calls.append(call)
            for call in calls:
                assert (await read(call)).WhichOneof("event") == "text_delta"

            served.process.send_signal(signal.SIGTERM)
            ends = [await read_rest(call) for call in calls]
            codes = [await call.code() for call in calls]
            exit_code = await asyncio.wait_for(served.process.wait(), 60)

    expected = "".join(f"part {i}. " for i in range(1, 21))
    assert codes == [grpc.StatusCode.OK] * CONNECTIONS
    assert all(rest[-1].completed.result.content == expected for rest in ends), ends[0][-1]
    assert answered_by(served.log)["StreamExecute"] == {"1", "2"}, "streams were on both"
    assert exit_code == 0
    for pid in served.worker_pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # gone (reaped by the supervisor, which has exited)
    log = "\n".join(served.log)
    for number, pid in enumerate(served.worker_pids, start=1):
        assert f"worker-{number} woolly_grpc.server: shutting down" in log
        assert f"worker {number} (pid {pid}) stopped" in log


async def test_a_worker_that_dies_stops_the_others(
    repos_root: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    """A worker killed (as the OOM killer would) stops the server: the other worker drains and
    the supervisor exits 1, so the orchestrator restarts it whole."""
    async with serving(*flags(repos_root, tmp_path, redis_server), env={}, workers=2) as served:
        killed, other = served.worker_pids
        os.kill(killed, signal.SIGKILL)
        exit_code = await asyncio.wait_for(served.process.wait(), 60)

    log = "\n".join(served.log)
    assert exit_code == 1
    assert f"worker 1 (pid {killed}) exited with code -9: stopping the other workers" in log
    assert f"worker 2 (pid {other}) stopped" in log


async def test_memory_store_with_workers_stops_start_up_with_one_line(repos_root: Path) -> None:
    code, _, err = await run_cli(
        *("serve", "--workers", "2", "--cache-url", "memory://", "--repos-root", str(repos_root))
    )
    assert code == 2
    assert err.count("\n") == 1 and "WOOLLY_WORKERS=2 needs a shared WOOLLY_CACHE_URL" in err


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "so_reuseport"])
async def test_a_port_another_program_holds_stops_start_up(
    repos_root: Path, tmp_path: Path, redis_server: RedisServer, reuse_port: bool
) -> None:
    """Whether the other program's socket allows SO_REUSEPORT (a grpc server's default) or not,
    the workers do not join it: start-up stops with one line."""
    with socket.socket() as other:
        if reuse_port:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        code, _, err = await run_cli(
            *("serve", "--workers", "2", "--host", "127.0.0.1", "--port", str(port)),
            *("--metrics-port", "0", *flags(repos_root, tmp_path, redis_server)),
        )
    assert code == 2
    assert err.splitlines()[-1] == (
        f"woolly-grpc: cannot listen on 127.0.0.1:{port}: [Errno 98] Address already in use"
    )
    assert "worker" not in err, "no worker was started"


async def test_a_worker_that_cannot_start_stops_start_up_with_its_line(
    repos_root: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    missing = tmp_path / "missing.pem"
    code, _, err = await run_cli(
        *("serve", "--workers", "2", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"),
        *flags(repos_root, tmp_path, redis_server),
        *("--tls-cert", str(missing), "--tls-key", str(missing)),
    )
    assert code == 2
    assert err.splitlines()[-1] == (
        "woolly-grpc: cannot use the TLS certificate and key: "
        f"[Errno 2] No such file or directory: '{missing}'"
    )
    assert err.count("cannot use the TLS certificate") == 1, "one line, not one per worker"
