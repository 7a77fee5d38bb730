"""What tracing costs a cache hit: before this change, after it with tracing unset, and traced.

    git worktree add /tmp/before <commit>
    python -m bench.studies.tracing /tmp/before [--rounds N] [--calls C] [--seconds S]

Starts a loopback OTLP receiver (`tests.support.otlp_receiver`, a process of its own) and three
`bench.serve_child --scripted` servers: the other tree's code, this tree's with no `OTEL_*`
variable, and this tree's exporting every call's spans to the receiver
(`OTEL_TRACES_SAMPLER=always_on`, batches as in production). Each round, per server in
alternating order: C sequential cached Execute calls, each timed, then a window of 64 callers
(calls/s and the server's CPU per call). Prints latency p50 / p90 / p99, calls/s and CPU per
call per server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from time import perf_counter

from grpc import aio

from bench import _common as common
from bench.cases import SERVICE, CpuClock, woolly_request
from bench.studies.ab import start_tree

CALLERS = 64


async def start(tree: Path, env: dict[str, str]) -> tuple[common.Child, int]:
    """`bench.serve_child --scripted` with `tree`'s code and these variables; its port."""
    # Our own OTEL_* variables, if any, must not make the untraced servers trace.
    return await start_tree(tree, env=env, inherited=_without_otel(os.environ))


def _without_otel(environ: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in environ.items() if not key.startswith("OTEL_")}


async def latency_s(execute: object, request: bytes) -> float:
    started = perf_counter()
    await common.call(execute, request)
    return perf_counter() - started


async def compare(before: Path, rounds: int, calls: int, seconds: float) -> str:
    async with contextlib.AsyncExitStack() as stack:
        sink = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "tests.support.otlp_receiver"),
            cwd=common.ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        stack.push_async_callback(common.stop, sink)
        assert sink.stdout is not None
        sink_port = int(await asyncio.wait_for(sink.stdout.readline(), timeout=60))
        traced = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
            "OTEL_TRACES_SAMPLER": "always_on",
        }
        plans = {
            "before": (before, {}),
            "after, tracing unset": (common.ROOT, {}),
            "after, traced (100 %)": (common.ROOT, traced),
        }
        servers = {}
        for name, (tree, env) in plans.items():
            servers[name] = await start(tree, env)
            stack.push_async_callback(common.stop, servers[name][0])
        executes: dict[str, object] = {}
        for name, (_, port) in servers.items():
            channel = aio.insecure_channel(f"127.0.0.1:{port}")
            stack.push_async_callback(channel.close)
            executes[name] = channel.unary_unary(SERVICE + "Execute")
        request = woolly_request("hit me")
        for execute in executes.values():
            await common.call(execute, request)
            await common.call(execute, request, expect="hit")
        clocks = {name: CpuClock(proc.pid) for name, (proc, _) in servers.items()}
        times: dict[str, list[float]] = {name: [] for name in servers}
        totals = {name: [0.0, 0.0, 0.0] for name in servers}  # calls, seconds, server CPU
        for index in range(rounds + 1):  # round 0 warms up
            for name in list(executes)[:: -1 if index % 2 else 1]:
                samples = [await latency_s(executes[name], request) for _ in range(calls)]
                cpu = clocks[name]()
                unit = functools.partial(common.call, executes[name], request)
                done, elapsed = await common.burst(unit, seconds, CALLERS)
                if index:
                    times[name].extend(samples)
                    total = totals[name]
                    total[0] += done
                    total[1] += elapsed
                    total[2] += clocks[name]() - cpu
    lines = []
    for name, samples in times.items():
        p50, p90, p99 = common.pcts(samples)
        count, took, used = totals[name]
        lines.append(
            f"{name}: latency p50 {p50 * 1e6:.0f} µs, p90 {p90 * 1e6:.0f} µs, "
            f"p99 {p99 * 1e6:.0f} µs ({len(samples)} calls); {CALLERS} callers "
            f"{count / took:,.0f} calls/s, server CPU {used / count * 1e6:.0f} µs per call"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="a checkout of the code before the change")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=300, help="sequential, per server and round")
    parser.add_argument("--seconds", type=float, default=1.0, help="per 64-caller window")
    args = parser.parse_args()
    print(asyncio.run(compare(args.before.resolve(), args.rounds, args.calls, args.seconds)))


if __name__ == "__main__":
    main()
