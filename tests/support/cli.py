"""The `woolly-grpc` console script as a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

CLI = [sys.executable, "-m", "woolly_grpc"]


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=50)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@dataclass
class ServeProcess:
    """A `woolly-grpc serve` child process, serving on `address`."""

    process: asyncio.subprocess.Process
    address: str
    log: list[str]
    """Its stderr lines so far, without their line ends (read as they come, all of them once it
    has stopped)."""
    worker_pids: list[int] = field(default_factory=list)
    """With `--workers` > 1, the workers' pids, as the supervisor logged them."""

    def memory_mib(self) -> tuple[int, int]:
        """(resident now, the most it has been resident), in MiB, from /proc."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        rss, peak = (re.search(rf"{k}:\s+(\d+) kB", status) for k in ("VmRSS", "VmHWM"))
        assert rss and peak
        return int(rss.group(1)) // 1024, int(peak.group(1)) // 1024


@contextlib.asynccontextmanager
async def serving(
    *flags: str, env: dict[str, str], workers: int = 1
) -> AsyncIterator[ServeProcess]:
    """`woolly-grpc serve` on a free loopback port, at INFO, with `env` over this environment;
    SIGTERMed at the end. With `workers` > 1, once the supervisor says every worker serves."""
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *("serve", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"),
        *("--workers", str(workers), *flags),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    assert process.stderr is not None
    ready = re.compile(
        r"serving .* on 127\.0\.0\.1:(\d+)"
        if workers == 1
        else rf"{workers} workers serving .* on 127\.0\.0\.1:(\d+) \(pids ([\d, ]+)\)"
    )
    log: list[str] = []
    reader: asyncio.Task[None] | None = None
    try:
        found = None
        while found is None:
            line = (await asyncio.wait_for(process.stderr.readline(), timeout=60)).decode()
            assert line, "serve exited before it was serving:\n" + "\n".join(log)
            log.append(line.rstrip("\n"))
            found = ready.search(line)
        # Read on as it runs: a full pipe would stop its logging, and the tests read the log.
        reader = asyncio.create_task(_read_lines(process.stderr, log))
        pids = [int(pid) for pid in found.group(2).split(", ")] if workers > 1 else []
        yield ServeProcess(process, f"127.0.0.1:{found.group(1)}", log, pids)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        if reader is None:
            reader = asyncio.create_task(_read_lines(process.stderr, log))
        await asyncio.wait_for(reader, timeout=60)
        await asyncio.wait_for(process.wait(), timeout=30)


async def _read_lines(stream: asyncio.StreamReader, lines: list[str]) -> None:
    """Append every line of `stream` to `lines` until it ends."""
    while line := await stream.readline():
        lines.append(line.decode().rstrip("\n"))
