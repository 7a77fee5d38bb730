"""A real PostgreSQL server on a free loopback port, for tests: initdb, start, databases, stop.

It runs Debian's `postgresql` binaries (`make install` installs them). PostgreSQL refuses to run
as root, so under root (as in CI) the server runs as the `postgres` user the package creates.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.helpers import free_port

START_TIMEOUT_S = 30.0
RUN_AS = "postgres"


def find_binaries() -> Path | None:
    """The directory holding initdb and postgres: on PATH, else Debian's versioned directory."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(on_path).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3])
    )
    return Path(versions[-1]).parent if versions else None


class PostgresServer:
    """One throwaway cluster (no fsync, trust auth) on 127.0.0.1."""

    def __init__(self, binaries: Path, directory: Path, user: pwd.struct_passwd | None) -> None:
        self.binaries = binaries
        self.directory = directory
        self.port = free_port()
        self._process: asyncio.subprocess.Process | None = None
        # Drops root in the child: uid, gid, and no supplementary groups of root's. setpriv does
        # it after exec; subprocess's own user=/group= would run Python in a forked copy of this
        # multi-threaded (grpc) process, which can hang before it ever execs.
        self._as_user: list[str] = (
            ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
            if user
            else []
        )

    def url(self, database: str = "postgres") -> str:
        """A sync-style URL, as users write it (the server maps it to asyncpg)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def start(self) -> None:
        """initdb (once) and start the server; return when it takes connections."""
        data = self.directory / "data"
        if not data.exists():
            await self._run(
                self.binaries / "initdb",
                *("-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync"),
                *("--encoding=UTF8", "--no-locale"),
            )
        log = await asyncio.to_thread((self.directory / "postgres.log").open, "ab")
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self._as_user,
                self.binaries / "postgres",
                *("-D", str(data), "-p", str(self.port), "-k", str(self.directory)),
                *("-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
                *("-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        await self._wait_ready()

    async def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        name = f"woolly_{uuid.uuid4().hex[:12]}"
        engine = create_async_engine(
            self.url().replace("postgresql://", "postgresql+asyncpg://"),
            isolation_level="AUTOCOMMIT",
        )
        try:
            async with engine.connect() as connection:
                await connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            await engine.dispose()
        return self.url(name)

    def pause(self) -> None:
        """SIGSTOP the server and every backend: connections stay open, nothing answers.

        Each backend is a session of its own (PostgreSQL calls setsid), so each gets the signal.
        """
        for process in self._family():
            process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT what `pause` stopped."""
        for process in self._family():
            process.send_signal(signal.SIGCONT)

    def _family(self) -> list[psutil.Process]:
        assert self._process is not None
        postmaster = psutil.Process(self._process.pid)
        return [postmaster, *postmaster.children(recursive=True)]

    async def stop(self) -> None:
        """Fast shutdown (SIGINT) and wait for the process to exit."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), timeout=30)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def _wait_ready(self) -> None:
        assert self._process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while not await self._answers():
            if self._process.returncode is not None or loop.time() > deadline:
                code = self._process.returncode
                await self.stop()
                raise RuntimeError(
                    f"postgres did not start on {self.port} (exit code {code}):\n{self._log_tail()}"
                )
            await asyncio.sleep(0.05)  # a start-up wait, bounded above; not test synchronisation

    async def _answers(self) -> bool:
        engine = create_async_engine(
            self.url().replace("postgresql://", "postgresql+asyncpg://"),
            connect_args={"timeout": 2},
        )
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            return True
        except Exception:  # refused, or "the database system is starting up"
            return False
        finally:
            await engine.dispose()

    async def _run(self, *command: str | Path) -> None:
        process = await asyncio.create_subprocess_exec(
            *self._as_user,
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{command[0]} failed:\n{output.decode(errors='replace')[-2000:]}")

    def _log_tail(self) -> str:
        log = self.directory / "postgres.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"


def _postgres_user() -> pwd.struct_passwd | None:
    """The user to run PostgreSQL as when we are root (it refuses root); None when we are not."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(RUN_AS)
    except KeyError:
        pytest.skip(f"running as root and there is no {RUN_AS!r} user to run PostgreSQL as")


@asynccontextmanager
async def running_postgres() -> AsyncIterator[PostgresServer]:
    """A started PostgresServer in a temporary directory, stopped and removed on exit.

    Skips the calling test (or every test of a fixture that uses it) without PostgreSQL.
    """
    binaries = find_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (no initdb); `make install` installs it")
    user = _postgres_user()
    with tempfile.TemporaryDirectory(prefix="woolly-postgres-") as directory:
        if user is not None:
            os.chown(directory, user.pw_uid, user.pw_gid)
        server = PostgresServer(binaries, Path(directory), user)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()
