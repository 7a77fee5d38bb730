"""The benchmark suite: woolly next to a bare grpc.aio echo and the FastAPI + SSE peer, in one run.

    python -m bench.suite [--quick] [--write]        (`make bench` runs it with --write)

Every server is a child process started here; this process is only the client. Woolly
(`bench.serve_child --scripted`) and the peer (`bench.peers.fastapi_sse`) serve the same agent
core and the same scripted test model (`bench.models`), so their difference is the serving layer.
Woolly runs five ways: memory store; Redis with its in-process copy of hot entries (as shipped);
Redis without it (before that optimisation); memory store on uvloop; memory store with Python's
default collector settings (before `tune_gc`). The peer caches in the same
Redis. Cases, each a table of the report (`bench/cases/` measures them):

1. cache hits, unary and streamed: sequential p50/p99, then 64 concurrent callers; the server's
   CPU per call, from its own process times;
2. uncached streams of 200 chunks: time to first event and first chunk, relay cost per chunk
   against the agent core run in-process;
3. 1,000 concurrent streams of ~1 s each: wall time, server RSS, memory per stream;
4. 100 identical concurrent misses: how often the model ran;
5. Redis commands per uncached run and per hit;
6. cache-hit calls/s with 2 workers (`WOOLLY_WORKERS`) against 1, on the same Redis
   (`bench.studies.workers`: two more servers, started for this case).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from pathlib import Path
from time import perf_counter

import aiohttp
from grpc import aio

from bench import _common as common
from bench import cases
from bench.cases import Plan, Servers
from woolly_grpc.server import tune_gc

FULL = Plan(
    rounds=5,
    calls=100,
    streams=10,
    burst_s=0.6,
    live_streams=8,
    crowd=1000,
    worker_rounds=4,
    worker_burst_s=2.0,
)
QUICK = Plan(
    rounds=2,
    calls=30,
    streams=3,
    burst_s=0.2,
    live_streams=3,
    crowd=200,
    worker_rounds=2,
    worker_burst_s=0.5,
)
WOOLLY, PEER = "bench.serve_child", "bench.peers.fastapi_sse"
CROWD_RUNS = "1100"
"""Woolly's run limit on the memory-store child, above the 1,000 concurrent streams."""

INTRO = "# Performance\n"


async def _start(stack: contextlib.AsyncExitStack) -> Servers:
    """Start Redis and every server; channels and an HTTP session to them, closed with `stack`."""
    redis_url = await common.start_redis(stack)
    children: dict[str, common.Child] = {}
    stack.push_async_callback(lambda: asyncio.gather(*(common.stop(p) for p in children.values())))
    calls_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="woolly-bench-")))
    calls = {name: calls_dir / name for name in ("memory", "peer")}
    redis = ("--cache-url", redis_url)
    crowd_runs = {"WOOLLY_MAX_CONCURRENT_RUNS": CROWD_RUNS}
    servers: dict[str, tuple[str, tuple[str, ...], dict[str, str]]] = {
        "echo": ("bench.baseline_echo", (), {}),
        "memory": (
            WOOLLY,
            ("--scripted", "--calls-file", str(calls["memory"])),
            crowd_runs,
        ),
        "redis": (WOOLLY, ("--scripted", *redis), {}),
        "redis, no hot copy": (WOOLLY, ("--scripted", *redis), {"WOOLLY_CACHE_HOT_TTL_S": "0"}),
        "memory, uvloop": (WOOLLY, ("--scripted", "--uvloop"), {}),
        "memory, default gc": (WOOLLY, ("--scripted", "--default-gc"), crowd_runs),
        "peer": (PEER, (*redis, "--calls-file", str(calls["peer"])), {}),
    }
    async with asyncio.TaskGroup() as group:
        tasks = {
            name: group.create_task(common.spawn_named(name, module, children, *args, env=env))
            for name, (module, args, env) in servers.items()
        }
    port = {name: task.result() for name, task in tasks.items()}
    channels = {
        name: await stack.enter_async_context(aio.insecure_channel(f"127.0.0.1:{port[name]}"))
        for name in port
        if name != "peer"
    }
    connector = aiohttp.TCPConnector(limit=0)  # as many connections as callers
    session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
    return Servers(
        echo=channels.pop("echo"),
        woolly=channels,
        woolly_ports={name: port[name] for name in channels},
        peer_url=f"http://127.0.0.1:{port['peer']}",
        session=session,
        pids={name: child.pid for name, child in children.items()},
        calls_files=calls,
        redis_url=redis_url,
    )


async def run(plan: Plan) -> str:
    """Start everything, run every case, return the report."""
    load, begin = common.load_average(), perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        servers = await _start(stack)
        started = perf_counter() - begin
        sections, ratios = [], []
        for case in (
            cases.hits,
            cases.live_streams,
            cases.crowd,
            cases.coalescing,
            cases.redis,
            cases.workers,
        ):
            section, found = await case(servers, plan)
            sections.append(section)
            ratios += found
        table = "\n".join(r.row() for r in ratios)
        body = "\n\n".join(sections)
        return f"""{common.heading("Benchmark suite")}

Command: `{common.command("bench.suite")}`

{common.machine(load)} Servers up in {started:.1f} s; all cases took \
{perf_counter() - begin - started:.0f} s. Woolly and the FastAPI + SSE peer serve the same agent \
core and scripted model (`bench/models.py`); the client sends and receives raw bytes on both \
(no protobuf or JSON work on its side). Ratios compare rows measured in this run.

| target | value | goal | |
|---|---:|---:|:-:|
{table}

{body}
"""
    raise AssertionError("unreachable")  # the exit stack does not swallow exceptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (~1 min)")
    parser.add_argument("--write", action="store_true", help="append to docs/performance.md")
    args = parser.parse_args()
    tune_gc()  # this process is the client (and runs the core alone): as the servers do
    report = asyncio.run(run(QUICK if args.quick else FULL))
    print(report)
    if args.write:
        common.append_to_doc(report, INTRO)


if __name__ == "__main__":
    main()
