"""Careless and abusive callers against a real `woolly-grpc serve` process: what they may cost.

Each test states the bound that must hold; memory is read from the server's /proc entry.
"""

from __future__ import annotations

import asyncio
import collections
import resource
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpc import StatusCode as S
from grpc import aio
from grpc_health.v1 import health_pb2

from tests.helpers import assert_eventually, health_stub, type_value
from tests.support.cli import ServeProcess, serving
from woolly_grpc._gen.woolly.v1 import agent_service_pb2, agent_service_pb2_grpc

MAX_MESSAGE = 2 * 1024 * 1024  # the default WOOLLY_MAX_MESSAGE_BYTES


def flags(repos_root: Path, tmp_path: Path) -> tuple[str, ...]:
    return ("--repos-root", str(repos_root), "--database-url", f"sqlite:///{tmp_path / 'a.db'}")


async def health_check(channel: aio.Channel) -> None:
    """One health check, answered within 1 s (its deadline) or the test fails."""
    stub = health_stub(channel)
    answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.timeout(120)
async def test_keyless_requests_of_the_largest_size_are_refused_unread(
    repos_root: Path, tmp_path: Path
) -> None:
    """60 concurrent keyless requests of the largest accepted size: all UNAUTHENTICATED, and the
    server's peak memory grows by at most 50 MiB (received and parsed they took 150 MiB)."""
    env = {"WOOLLY_API_KEYS": "acme:s3cret", "GRPC_VERBOSITY": "ERROR"}
    async with (
        serving(*flags(repos_root, tmp_path), env=env) as served,
        aio.insecure_channel(served.address) as channel,
    ):
        stub = agent_service_pb2_grpc.AgentServiceStub(channel)
        request = agent_service_pb2.ExecuteRequest(
            repository_name="calculator",
            agent_type=type_value("summarizer"),
            user_query="x" * (MAX_MESSAGE - 64),
        )
        assert request.ByteSize() <= MAX_MESSAGE

        async def keyless() -> S:
            try:
                await stub.Execute(request, timeout=60)
            except aio.AioRpcError as error:
                return error.code()
            return S.OK

        assert await keyless() == S.UNAUTHENTICATED  # warm: the first call's imports and buffers
        rss_before, _ = served.memory_mib()
        codes = await asyncio.gather(*(keyless() for _ in range(60)))
        _, peak = served.memory_mib()

    assert codes == [S.UNAUTHENTICATED] * 60
    assert peak - rss_before <= 50, f"peak memory grew {peak - rss_before} MiB"


def silent_connections(port: int, count: int) -> list[socket.socket]:
    """`count` TCP connections that never say a word."""
    made = []
    for _ in range(count):
        made.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        made[-1].setblocking(False)
    return made


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed it (what it sent before, e.g. its HTTP/2 settings, is read)."""
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    return True


@pytest.fixture
def descriptors() -> Iterator[int]:
    """Room in this process for the silent connections (the server raises its own limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 5000:
        pytest.skip(f"the descriptor hard limit is {hard}; this test needs 5,000")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.timeout(120)
async def test_silent_connections_are_closed_and_health_answers_throughout(
    repos_root: Path, tmp_path: Path, descriptors: int
) -> None:
    """2,000 connections that never send a byte: each is closed within the handshake timeout
    (2 s here, plus slack for a loaded machine), and health checks on a connection of their own
    answer within 1 s the whole time (before: they stayed open until the 120 s default, and
    past the descriptor limit health checks timed out)."""
    env = {"GRPC_VERBOSITY": "ERROR"}
    async with (
        serving(*flags(repos_root, tmp_path), "--handshake-timeout-s", "2", env=env) as served,
        aio.insecure_channel(served.address) as channel,
    ):
        port = int(served.address.rpartition(":")[2])
        await health_check(channel)
        sockets = silent_connections(port, 2000)
        try:
            checks = 0

            async def all_closed() -> bool:
                nonlocal checks
                await health_check(channel)  # raises past its 1 s deadline
                checks += 1
                return all(closed_by_peer(s) for s in sockets)

            await assert_eventually(all_closed, timeout=2 + 20, every=0.1)
        finally:
            for sock in sockets:
                sock.close()
        await health_check(channel)

    assert checks >= 1
    assert_closed_connections_logged_nothing(served)


def assert_closed_connections_logged_nothing(served: ServeProcess) -> None:
    """Closing silent connections is routine: no WARNING or ERROR line for them."""
    loud = [line for line in served.log if " WARNING " in line or " ERROR " in line]
    assert loud == []


PROBER = """
import sys, time, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(sys.argv[1]))
stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
print("ready", flush=True)
for line in sys.stdin:  # one check per line; the answer's code, or how it failed
    try:
        stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
        print("OK", flush=True)
    except grpc.RpcError as error:
        print(error.code().name, flush=True)
"""
"""A health prober in a process of its own, as a kubelet is: this test's loop is busy."""


@pytest.mark.timeout(180)
async def test_a_burst_of_streams_ends_ok_or_resource_exhausted_and_health_answers(
    repos_root: Path, tmp_path: Path
) -> None:
    """500 fresh StreamExecute at once over 10 connections, 16 runs allowed: every call ends OK
    or RESOURCE_EXHAUSTED (none silently CANCELLED), and health checks from another process
    answer within their 1 s deadline throughout."""
    limit = ("--max-concurrent-runs", "16")
    env = {"GRPC_VERBOSITY": "ERROR"}
    async with serving(*flags(repos_root, tmp_path), *limit, env=env) as served:
        prober = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-c", PROBER, served.address),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert prober.stdin and prober.stdout
        ask, answer = prober.stdin, prober.stdout
        assert (await answer.readline()).strip() == b"ready"
        channels = [
            aio.insecure_channel(served.address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(10)
        ]
        stubs = [agent_service_pb2_grpc.AgentServiceStub(c) for c in channels]

        async def stream(i: int) -> S:
            request = agent_service_pb2.StreamExecuteRequest(
                repository_name="calculator",
                agent_type=type_value("summarizer"),
                user_query=f"burst {i}",
            )
            try:
                async for _ in stubs[i % 10].StreamExecute(request, timeout=120):
                    pass
            except aio.AioRpcError as error:
                return error.code()
            return S.OK

        async def probe_until(done: asyncio.Future[list[S]]) -> list[str]:
            answers: list[str] = []
            while not done.done() or not answers:
                ask.write(b"check\n")
                answers.append((await answer.readline()).decode().strip())
            return answers

        burst = asyncio.gather(*(stream(i) for i in range(500)))
        answers = await probe_until(burst)
        codes = await burst
        ask.close()
        await prober.wait()
        for channel in channels:
            await channel.close()

    assert set(codes) <= {S.OK, S.RESOURCE_EXHAUSTED}, collections.Counter(codes)
    assert S.OK in codes
    assert set(answers) == {"OK"}, collections.Counter(answers)
    print(f"{collections.Counter(c.name for c in codes)}; {len(answers)} health checks")


@pytest.mark.timeout(180)
async def test_replays_to_clients_that_read_nothing_share_the_cached_entry(
    repos_root: Path, tmp_path: Path
) -> None:
    """500 cache-hit StreamExecute replays of a 200 KB stream whose clients read nothing: the
    server's peak memory grows by at most 50 MiB, and is back within 50 MiB of where it was once
    they go (before, each replay copied the entry: +112 MiB, kept)."""
    env = {"GRPC_VERBOSITY": "ERROR"}
    async with serving(*flags(repos_root.parent / "pypi", tmp_path), env=env) as served:
        channels = [
            aio.insecure_channel(served.address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(10)
        ]
        stubs = [agent_service_pb2_grpc.AgentServiceStub(c) for c in channels]
        request = agent_service_pb2.StreamExecuteRequest(
            repository_name="boltons", agent_type=type_value("documentation"), user_query="docs"
        )
        first = [m async for m in stubs[0].StreamExecute(request, timeout=120)]
        assert sum(m.ByteSize() for m in first) > 100_000
        rss_before, _ = served.memory_mib()
        replays = [stubs[i % 10].StreamExecute(request, timeout=120) for i in range(500)]
        await asyncio.gather(*(call.initial_metadata() for call in replays))
        hits: list[Any] = [await call.read() for call in replays]  # one each, then nothing
        _, peak = served.memory_mib()
        for call in replays:
            call.cancel()
        for channel in channels:
            await channel.close()
        rss_after, _ = served.memory_mib()

    assert {m.run_id for m in hits} == {first[0].run_id}  # all served from the cache
    assert peak - rss_before <= 50, f"peak memory grew {peak - rss_before} MiB"
    assert rss_after - rss_before <= 50, f"{rss_after - rss_before} MiB kept"
