"""The `woolly-grpc` console script as a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
    """Its stderr lines so far (all of them once it has stopped)."""

    def memory_mib(self) -> tuple[int, int]:
        """(resident now, the most it has been resident), in MiB, from /proc."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        rss, peak = (re.search(rf"{k}:\s+(\d+) kB", status) for k in ("VmRSS", "VmHWM"))
        assert rss and peak
        return int(rss.group(1)) // 1024, int(peak.group(1)) // 1024


@contextlib.asynccontextmanager
async def serving(*flags: str, env: dict[str, str]) -> AsyncIterator[ServeProcess]:
    """`woolly-grpc serve` on a free loopback port, at INFO, with `env` over this environment;
    SIGTERMed at the end."""
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *("serve", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", *flags),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    assert process.stderr is not None
    log: list[str] = []
    try:
        port = None
        while port is None:
            line = (await asyncio.wait_for(process.stderr.readline(), timeout=30)).decode()
            assert line, "serve exited before it was serving"
            log.append(line)
            if found := re.search(r"serving .* on 127\.0\.0\.1:(\d+)", line):
                port = int(found.group(1))
        yield ServeProcess(process, f"127.0.0.1:{port}", log)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        log.extend(
            (await asyncio.wait_for(process.stderr.read(), timeout=30)).decode().splitlines()
        )
        await asyncio.wait_for(process.wait(), timeout=30)
