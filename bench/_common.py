"""What the benchmarks share: child servers, percentiles, machine facts, the performance doc."""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import datetime as dt
import os
import platform
import shlex
import signal
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import grpc
from grpc import aio

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
Child = asyncio.subprocess.Process
Unit = Callable[[], Awaitable[Sequence[object]]]
"""One call, returning the messages it received."""


async def spawn(
    module: str,
    children: list[Child],
    *args: str,
    quiet: bool = False,
    env: dict[str, str] | None = None,
) -> int:
    """Start `python -m module --port 0 *args` (kept in `children`); its port from stdout.

    `quiet` sends the child's stderr (its logs) to /dev/null; `env` adds environment variables.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", module, "--port", "0", *args),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL if quiet else None,
        env={**os.environ, **(env or {})},
    )
    children.append(proc)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
    if not line:
        raise RuntimeError(f"{module} exited with code {await proc.wait()} before serving")
    return int(line)


async def spawn_named(
    name: str, module: str, children: dict[str, Child], *args: str, **options: Any
) -> int:
    """`spawn`, keeping the child under `name` (so its pid can be found for CPU and memory)."""
    started: list[Child] = []
    try:
        return await spawn(module, started, *args, **options)
    finally:
        if started:  # also when it failed to serve: the caller stops it
            children[name] = started[0]


async def profile_until_sigterm(stats_file: Path) -> None:
    """cProfile this process (a child server) until SIGTERM, then write the stats for pstats."""
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    profiler = cProfile.Profile()
    profiler.enable()
    await stopped.wait()
    profiler.disable()
    profiler.dump_stats(stats_file)


async def stop(proc: Child) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 5 s."""
    if proc.returncode is None:
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout=5)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def start_redis(stack: contextlib.AsyncExitStack) -> str:
    """A redis-server without persistence on a free loopback port, stopped with `stack`; its URL."""
    from tests.support.redis_server import REDIS_SERVER, RedisNode

    if REDIS_SERVER is None:
        raise SystemExit("needs redis-server on PATH (`make install`)")
    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="woolly-bench-redis-"))
    redis = RedisNode(REDIS_SERVER, Path(directory))
    stack.push_async_callback(redis.stop)
    await redis.start()
    return redis.url


async def burst(unit: Unit, seconds: float, callers: int) -> tuple[int, float]:
    """Messages received by `callers` tasks looping `unit` for `seconds`, and the time taken."""
    start = perf_counter()
    deadline = start + seconds

    async def caller() -> int:
        received = 0
        while perf_counter() < deadline:
            received += len(await unit())
        return received

    counts = await asyncio.gather(*(caller() for _ in range(callers)))
    return sum(counts), perf_counter() - start


async def call(multi: Any, request: bytes, expect: str = "") -> list[bytes]:
    """The messages of one unary or server-streaming call; checks the cache trailer if asked."""
    rpc = multi(request, timeout=60)
    messages = [m async for m in rpc] if isinstance(rpc, aio.UnaryStreamCall) else [await rpc]
    got = (await rpc.trailing_metadata()).get("woolly-cache") if expect else ""
    if got != expect:
        raise RuntimeError(f"expected woolly-cache: {expect}, got {got}")
    return messages


def pcts(xs: Sequence[float]) -> tuple[float, float, float]:
    """p50, p90, p99."""
    q = statistics.quantiles(xs, n=100, method="inclusive")
    return q[49], q[89], q[98]


@dataclass(frozen=True)
class Ratio:
    """A measured ratio and its target, as a Markdown table row."""

    label: str
    value: float
    target: float
    at_most: bool = False
    unit: str = "x"

    @property
    def ok(self) -> bool:
        """Whether the target is met."""
        return self.value <= self.target if self.at_most else self.value >= self.target

    def row(self, unit: str | None = None) -> str:
        """`| label | value | target | ✅/❌ |`."""
        unit = self.unit if unit is None else unit
        sign, mark = "≤" if self.at_most else "≥", "✅" if self.ok else "❌"
        return f"| {self.label} | {self.value:.2f}{unit} | {sign} {self.target:g}{unit} | {mark} |"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (other work on the machine)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def heading(title: str = "") -> str:
    """A dated section heading, optionally titled."""
    prefix = f"{title}, " if title else ""
    return f"## {prefix}{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"


def command(module: str) -> str:
    """The command line that ran this benchmark."""
    return shlex.join(["python", "-m", module, *sys.argv[1:]])


def machine(load: str) -> str:
    """Machine facts for a report: OS, CPUs, Python, grpcio, the load before the run."""
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, grpcio {grpc.__version__}, asyncio loop; load average "
        f"before the run {load}."
    )


def append_to_doc(report: str, intro: str) -> None:
    """Append a report to docs/performance.md (created with `intro` if missing)."""
    DOC.parent.mkdir(exist_ok=True)
    if not DOC.exists():
        DOC.write_text(intro)
    with DOC.open("a") as doc:
        doc.write("\n" + report.rstrip("\n") + "\n")
    print(f"appended to {DOC.relative_to(ROOT)}")
