"""A real redis-server on a free loopback port, for tests: start, kill, pause, restart, stop.

With WOOLLY_TEST_REDIS=cluster, `running_redis()` starts a Redis Cluster of three masters instead
(`make test` runs the store, cache and runs tests a second time that way).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from redis.asyncio import Redis, RedisCluster

from tests.helpers import free_port

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
START_TIMEOUT_S = 10.0
CLUSTER = os.environ.get("WOOLLY_TEST_REDIS", "") == "cluster"
"""Whether `running_redis()` starts a three-master cluster rather than one server."""
_NODE_TIMEOUT_MS = 300_000
"""Longer than any pause a test makes: a stopped cluster wakes up whole, never half failed."""


class RedisNode:
    """One redis-server process without persistence on 127.0.0.1, restartable on its port."""

    def __init__(
        self, executable: str, directory: Path, port: int | None = None, *, cluster: bool = False
    ) -> None:
        self.executable = executable
        self.directory = directory
        self.port = port or free_port()
        self.cluster = cluster
        self.bus_port = free_port() if cluster else None
        """The cluster bus's port (by default port + 10000, often past 65535)."""
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def bare_url(self) -> str:
        """The URL without options (a node's `url` has none)."""
        return self.url

    @property
    def ports(self) -> list[int]:
        return [self.port]

    def client(self) -> Redis:
        """A redis-py client of this server, for tests that look inside."""
        return Redis.from_url(self.url)

    async def start(self) -> None:
        """Start the server (again, on the same port) and wait until it answers PING."""
        assert self._process is None, "already running"
        log = self.directory / "redis.log"
        self._process = process = await asyncio.create_subprocess_exec(
            self.executable,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "no"),
            *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
            *("--logfile", str(log)),
            *(self._cluster_options() if self.cluster else ()),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while not await self._answers_ping():
            if process.returncode is not None or loop.time() > deadline:
                await self.kill()
                output = log.read_text() if log.exists() else "(no log)"
                raise RuntimeError(f"redis-server did not start on {self.port}:\n{output[-2000:]}")
            await asyncio.sleep(0.01)  # a start-up wait, bounded above; not test synchronisation

    def _cluster_options(self) -> tuple[str, ...]:
        # nodes.conf keeps the node's id and slots in its directory: a restart rejoins.
        return (
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-node-timeout", str(_NODE_TIMEOUT_MS)),
            *("--cluster-port", str(self.bus_port)),
        )

    async def flush(self) -> None:
        """Forget every key (between tests sharing the server)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(b"FLUSHALL\r\n")
            assert await reader.readline() == b"+OK\r\n"
        finally:
            writer.close()
            await writer.wait_closed()

    async def kill(self) -> None:
        """SIGKILL, as a crash would, and wait for the process to exit."""
        await self._end(signal.SIGKILL)

    async def stop(self) -> None:
        """SIGTERM and wait for the process to exit."""
        await self._end(signal.SIGTERM)

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause()`."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    async def _end(self, signum: int) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signum)
        process.send_signal(signal.SIGCONT)  # a paused server must run to handle SIGTERM
        await process.wait()

    async def _answers_ping(self) -> bool:
        try:
            async with asyncio.timeout(1.0):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                try:
                    writer.write(b"PING\r\n")
                    return await reader.readline() == b"+PONG\r\n"
                finally:
                    writer.close()
                    await writer.wait_closed()
        except OSError:  # refused or reset while starting; TimeoutError is an OSError too
            return False


class RedisClusterServer:
    """Three redis-server masters on 127.0.0.1 joined into one cluster, with RedisNode's
    controls applied to every node at once (a whole-cluster crash, stall or restart)."""

    def __init__(self, executable: str, cli: str, directory: Path) -> None:
        self.cli = cli
        self.nodes = []
        for i in range(3):
            (directory / f"node{i}").mkdir()
            self.nodes.append(RedisNode(executable, directory / f"node{i}", cluster=True))
        self._created = False

    @property
    def url(self) -> str:
        # A cluster client's first operations learn the layout from every node: on two busy
        # shared cores that alone can outlast the 0.25 s default bound, which tests would then
        # take for an outage. Outage tests stop or kill the nodes, which a 2 s bound still sees.
        return f"{self.bare_url}?op_timeout_s=2"

    @property
    def bare_url(self) -> str:
        """The URL without options, for a RedisStore built directly (its bounds as arguments)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def client(self) -> RedisCluster:
        """A redis-py cluster client, for tests that look inside."""
        return RedisCluster(host="127.0.0.1", port=self.nodes[0].port)

    async def start(self) -> None:
        """Start every node; the first time, join them (16384 slots split in three)."""
        await asyncio.gather(*(node.start() for node in self.nodes))
        if not self._created:
            create = await asyncio.create_subprocess_exec(
                self.cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas", "0", "--cluster-yes",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            output, _ = await create.communicate()
            if create.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{output.decode()}")
            self._created = True
        await self._wait_until_ok()

    async def flush(self) -> None:
        await asyncio.gather(*(node.flush() for node in self.nodes))

    async def kill(self) -> None:
        await asyncio.gather(*(node.kill() for node in self.nodes))

    async def stop(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes))

    def pause(self) -> None:
        for node in self.nodes:
            node.pause()

    def resume(self) -> None:
        for node in self.nodes:
            node.resume()

    async def _wait_until_ok(self) -> None:
        """Until every node says cluster_state:ok (bounded; a start-up wait)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        for node in self.nodes:
            async with node.client() as client:
                while (await client.execute_command("CLUSTER INFO"))["cluster_state"] != "ok":
                    if loop.time() > deadline:
                        raise RuntimeError(f"cluster not ok on {node.port}")
                    await asyncio.sleep(0.05)


RedisServer = RedisNode | RedisClusterServer
"""What `running_redis()` starts: the tests use either through the same controls."""


@asynccontextmanager
async def running_redis() -> AsyncIterator[RedisServer]:
    """A started RedisNode (or with WOOLLY_TEST_REDIS=cluster, a RedisClusterServer) in a
    temporary directory, stopped on exit.

    Skips the calling test (or every test of a fixture that uses it) without redis-server.
    """
    if REDIS_SERVER is None or (CLUSTER and REDIS_CLI is None):
        pytest.skip("redis-server is not on PATH; `make install` installs it")
    with tempfile.TemporaryDirectory(prefix="woolly-redis-") as directory:
        server: RedisServer
        if CLUSTER:
            assert REDIS_CLI is not None
            server = RedisClusterServer(REDIS_SERVER, REDIS_CLI, Path(directory))
        else:
            server = RedisNode(REDIS_SERVER, Path(directory))
        await server.start()
        try:
            yield server
        finally:
            await server.stop()


def with_options(url: str, **options: object) -> str:
    """`url` with these query options set (over any it has)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query)) | {k: str(v) for k, v in options.items()}
    return urlunsplit(parts._replace(query=urlencode(query)))
