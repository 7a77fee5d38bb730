"""The `woolly-grpc` console script as a real subprocess."""

from __future__ import annotations

import asyncio
import sys

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
