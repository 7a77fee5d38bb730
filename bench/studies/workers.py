"""Cache-hit Execute calls/s with 1 and with 2 workers (`WOOLLY_WORKERS`), one Redis behind both.

Both servers are `woolly-grpc serve` children as shipped (`--workers 1`, `--workers 2`,
/metrics on, WARNING logs); this process is the load generator only: CALLERS tasks over
CONNECTIONS connections of their own (SO_REUSEPORT spreads connections, not calls, over the
workers), sending raw bytes. Rounds alternate the servers. Server CPU is the worker processes'
own (user + system).

    python -m bench.studies.workers [--quick] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil
from grpc import aio

from bench import _common as common
from bench._common import call
from bench.cases._base import CpuClock
from bench.studies.cache import HIT, SERVICE
from tests.helpers import free_port

CALLERS, CONNECTIONS, CORES = 64, 16, 16
TARGET = 1.4
"""2 workers / 1 worker, calls/s, on this 2-core machine (issue 18)."""
REPOS_ROOT = common.ROOT / "tests" / "fixtures" / "repos"


@dataclass(frozen=True)
class Plan:
    rounds: int
    burst_s: float  # the load window per server and round


FULL, QUICK = Plan(6, 3.0), Plan(2, 0.5)


@dataclass
class Server:
    """One `woolly-grpc serve`, its workers' CPU clocks, and what the load measured on it."""

    workers: int
    port: int
    clocks: list[CpuClock] = field(default_factory=list)
    """The server processes' (the workers', or the one server's)."""
    supervisor: CpuClock | None = None
    units: list[common.Unit] = field(default_factory=list)
    """One cache-hit Execute per connection."""
    calls: int = 0
    seconds: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    redis_cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def per_call_us(self, cpu_s: float) -> float:
        return cpu_s / self.calls * 1e6


async def _start(workers: int, redis: str, directory: str, children: list[common.Child]) -> Server:
    """`woolly-grpc serve --workers N` on a free port, once every worker listens on it."""
    server = Server(workers, free_port())
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "woolly_grpc", "serve", "--workers", str(workers)),
        *("--host", "127.0.0.1", "--port", str(server.port), "--metrics-port", str(free_port())),
        *("--cache-url", redis, "--repos-root", str(REPOS_ROOT), "--log-level", "WARNING"),
        *("--database-url", f"sqlite:///{directory}/agents-{workers}.db"),
        cwd=common.ROOT,
    )
    children.append(process)
    deadline = time.monotonic() + 120
    while not (pids := _listening(process.pid, workers, server.port)):
        if process.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError(f"--workers {workers} did not start (exit {process.returncode})")
        await asyncio.sleep(0.2)  # a start-up wait, bounded above
    server.clocks = [CpuClock(pid) for pid in pids]
    server.supervisor = CpuClock(process.pid) if workers > 1 else None
    return server


def _listening(pid: int, workers: int, port: int) -> list[int]:
    """The server processes (the workers, or the one server) once each listens on `port`."""
    process = psutil.Process(pid)
    servers = [process] if workers == 1 else process.children()
    servers = [p for p in servers if p.pid == pid or "spawn_main" in " ".join(p.cmdline())]
    listening = [
        p.pid
        for p in servers
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in p.net_connections())
    ]
    return listening if len(listening) == workers else []


def _redis_clock(url: str) -> CpuClock:
    port = url.rsplit(":", 1)[1].split("/")[0]
    for process in psutil.process_iter(["cmdline"]):
        title = " ".join(process.info["cmdline"] or [])  # redis-server sets `… 127.0.0.1:PORT`
        if "redis-server" in title and f":{port}" in title:
            return CpuClock(process.pid)
    raise RuntimeError("redis-server not found")


async def _connect(server: Server, stack: contextlib.AsyncExitStack) -> None:
    """CONNECTIONS connections of their own; fill the cache and check each call is a hit."""
    options = [("grpc.use_local_subchannel_pool", 1)]  # a connection per channel, not shared
    for _ in range(CONNECTIONS):
        channel = await stack.enter_async_context(
            aio.insecure_channel(f"127.0.0.1:{server.port}", options=options)
        )
        execute: Any = channel.unary_unary(SERVICE + "Execute")
        await call(execute, HIT)
        await call(execute, HIT, expect="hit")
        server.units.append(functools.partial(call, execute, HIT))


async def _load(server: Server, seconds: float, redis: CpuClock, *, measured: bool) -> None:
    """CALLERS tasks, each call on the next connection, for `seconds`."""
    connections = itertools.cycle(server.units)

    async def any_connection() -> Sequence[object]:
        return await next(connections)()

    cpu, client, redis_cpu = (sum(c() for c in server.clocks), time.process_time(), redis())
    calls, elapsed = await common.burst(any_connection, seconds, CALLERS)
    if measured:
        server.calls += calls
        server.seconds += elapsed
        server.server_cpu_s += sum(c() for c in server.clocks) - cpu
        server.client_cpu_s += time.process_time() - client
        server.redis_cpu_s += redis() - redis_cpu


def ratio(one: Server, two: Server) -> common.Ratio:
    """The target row: calls/s with 2 workers over 1."""
    return common.Ratio("calls/s, 2 workers / 1 worker (Redis, hits)", two.rate / one.rate, TARGET)


def findings(one: Server, two: Server, plan: Plan) -> str:
    """What was measured, as Markdown: the table, the target, what 16 cores would give."""
    rows = "\n".join(
        f"| {s.workers} | {s.rate:,.0f} | {s.per_call_us(s.server_cpu_s):.0f} | "
        f"{s.per_call_us(s.client_cpu_s):.0f} | {s.per_call_us(s.redis_cpu_s):.1f} | "
        f"{(s.server_cpu_s + s.client_cpu_s + s.redis_cpu_s) / s.seconds:.2f} |"
        for s in (one, two)
    )
    mib = [round(c.rss() / 2**20) for c in two.clocks]
    assert two.supervisor is not None
    memory = (
        f"Resident memory after the load: the single server {one.clocks[0].rss() / 2**20:.0f} "
        f"MiB; with 2 workers, each worker {' and '.join(map(str, mib))} MiB and the "
        f"supervisor {two.supervisor.rss() / 2**20:.0f} MiB."
    )
    bound = 2e6 / (two.per_call_us(two.server_cpu_s) + two.per_call_us(two.client_cpu_s))
    server_us = two.per_call_us(two.server_cpu_s)
    redis_us = two.per_call_us(two.redis_cpu_s)
    cores = CORES * 1e6 / server_us
    redis_line = f"{1e6 / redis_us:,.0f} calls/s" if redis_us > 0 else "no limit measured"
    return f"""`woolly-grpc serve --workers 1` and `--workers 2` on one Redis, {plan.rounds} \
rounds alternating the servers, {plan.burst_s:g} s of load on each per round: {CALLERS} concurrent \
callers in the benchmark process (the load generator) over {CONNECTIONS} connections, every \
call an `Execute` answered from the cache (Redis, with each worker's hot copy of the entry).

| workers | calls/s | server CPU µs/call | load generator CPU µs/call | Redis CPU µs/call | \
cores busy |
|---|---:|---:|---:|---:|---:|
{rows}

| ratio | value | target | |
|---|---:|---:|:-:|
{ratio(one, two).row()}

By the measured server CPU per hit ({server_us:.0f} µs, 2 workers), {CORES} workers on \
{CORES} cores, with the load generators on other machines, would answer about \
{cores:,.0f} cache hits/s; the one Redis, at {redis_us:.1f} µs per call here, allows \
{redis_line} (hot copies keep most hits off it). On this machine the load generator shares \
the 2 cores: at the measured CPU per call of server and load generator together, 2 fully \
free cores allow at most {bound:,.0f} calls/s with 2 workers ({bound / one.rate:.2f}x the 1 \
worker's rate measured here), whatever the server does.

{memory}"""


async def measure(
    plan: Plan, redis_url: str, stack: contextlib.AsyncExitStack
) -> tuple[Server, Server]:
    """Start `--workers 1` and `--workers 2` on `redis_url` (stopped with `stack`), load them
    in alternating rounds; the two servers with what was measured."""
    children: list[common.Child] = []
    stack.push_async_callback(lambda: asyncio.gather(*(common.stop(p) for p in children)))
    redis = _redis_clock(redis_url)
    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="woolly-bench-"))
    servers = [await _start(n, redis_url, directory, children) for n in (1, 2)]
    for server in servers:
        await _connect(server, stack)
        await _load(server, plan.burst_s, redis, measured=False)  # warm up
    for index in range(plan.rounds):
        for server in servers[:: -1 if index % 2 else 1]:
            await _load(server, plan.burst_s, redis, measured=True)
    one, two = servers
    return one, two


async def run(plan: Plan) -> str:
    """Start Redis and both servers, measure, return the report."""
    load = common.load_average()
    async with contextlib.AsyncExitStack() as stack:
        redis_url = await common.start_redis(stack)
        one, two = await measure(plan, redis_url, stack)
        return f"""{common.heading("Workers")}

Command: `{common.command("bench.studies.workers")}`

{common.machine(load)} Load average after: {common.load_average()}.

{findings(one, two, plan)}
"""
    raise AssertionError("unreachable")  # the exit stack does not swallow exceptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (~30 s in all)")
    parser.add_argument("--write", action="store_true", help="append to docs/performance.md")
    args = parser.parse_args()
    report = asyncio.run(run(QUICK if args.quick else FULL))
    print(report)
    if args.write:
        common.append_to_doc(report, "# Performance\n")


if __name__ == "__main__":
    main()
