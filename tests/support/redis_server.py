"""A real redis-server on a free loopback port, for tests: start, kill, pause, restart, stop."""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.helpers import free_port

REDIS_SERVER = shutil.which("redis-server")
START_TIMEOUT_S = 10.0


class RedisServer:
    """One redis-server process without persistence on 127.0.0.1, restartable on its port."""

    def __init__(self, executable: str, directory: Path, port: int | None = None) -> None:
        self.executable = executable
        self.directory = directory
        self.port = port or free_port()
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start the server (again, on the same port) and wait until it answers PING."""
        assert self._process is None, "already running"
        log = self.directory / "redis.log"
        self._process = process = await asyncio.create_subprocess_exec(
            self.executable,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "no"),
            *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
            *("--logfile", str(log)),
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


@asynccontextmanager
async def running_redis() -> AsyncIterator[RedisServer]:
    """A started RedisServer in a temporary directory, stopped on exit.

    Skips the calling test (or every test of a fixture that uses it) without redis-server.
    """
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not on PATH; `make install` installs it")
    with tempfile.TemporaryDirectory(prefix="woolly-redis-") as directory:
        server = RedisServer(REDIS_SERVER, Path(directory))
        await server.start()
        try:
            yield server
        finally:
            await server.stop()
