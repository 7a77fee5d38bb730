"""What the metrics interceptor (and the per-RPC log line) cost on the cheapest call: a cache hit.

Three children of bench.serve_child in one run: the server as shipped (metrics interceptor,
access log off as at WARNING), the same without the metrics interceptor, and the same with
the JSON access log at INFO (to /dev/null). This process is only the client, sending raw bytes;
rounds interleave the servers, alternating their order.

    python -m bench.studies.metrics_overhead [--quick] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
from collections import defaultdict
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from grpc import aio

from bench import _common as common
from bench._common import call, pcts
from bench.studies.cache import HIT, SERVICE

CALLERS = 64
VARIANTS = {
    "without": ("--no-grpc-metrics",),
    "with": (),
    "with + log": ("--access-log",),
}
"""Server flags per variant; `with` is the server as shipped."""
NAMES = {
    "without": "Execute cache hit, no metrics interceptor",
    "with": "Execute cache hit, metrics interceptor (as shipped)",
    "with + log": "Execute cache hit, metrics + JSON access log at INFO",
}


@dataclass(frozen=True)
class Plan:
    rounds: int
    calls: int  # sequential calls per variant and round
    burst_s: float  # the 64-caller window per variant and round


FULL, QUICK, WARM_UP = Plan(10, 300, 0.5), Plan(2, 50, 0.1), Plan(1, 100, 0.1)


class Bench:
    """A channel per variant and what was measured on it."""

    def __init__(self, channels: dict[str, aio.Channel]) -> None:
        self.executes: dict[str, Any] = {
            name: channel.unary_unary(SERVICE + "Execute") for name, channel in channels.items()
        }
        self.units: dict[str, common.Unit] = {
            name: functools.partial(call, execute, HIT) for name, execute in self.executes.items()
        }
        self.seq: dict[str, list[float]] = defaultdict(list)
        self.rate: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])

    async def calibrate(self) -> None:
        """Fill each server's cache and check that the timed calls are hits."""
        for execute in self.executes.values():
            await call(execute, HIT)
            await call(execute, HIT, expect="hit")

    async def round(self, plan: Plan, index: int) -> None:
        """Sequential calls, then concurrent callers; the order of the servers alternates."""
        order = list(self.units.items())[:: -1 if index % 2 else 1]
        for name, unit in order:
            for _ in range(plan.calls):
                start = perf_counter()
                await unit()
                self.seq[name].append(perf_counter() - start)
        for name, unit in order:
            received, seconds = await common.burst(unit, plan.burst_s, CALLERS)
            self.rate[name][0] += received
            self.rate[name][1] += seconds


def _report(b: Bench, plan: Plan, times: tuple[float, float], load: str) -> str:
    p50 = {name: pcts(xs)[0] for name, xs in b.seq.items()}
    rate = {name: m / s for name, (m, s) in b.rate.items()}
    rows = []
    for name in VARIANTS:
        ms = " | ".join(f"{v * 1e3:.3f}" for v in pcts(b.seq[name]))
        rows.append(f"| {NAMES[name]} | {len(b.seq[name])} | {ms} | {rate[name]:,.0f} calls/s |")
    ratios = [
        common.Ratio(
            "metrics interceptor: p50 latency added",
            100 * (p50["with"] / p50["without"] - 1),
            5,
            True,
        ),
        common.Ratio(
            f"metrics interceptor: calls/s lost, {CALLERS} callers",
            100 * (1 - rate["with"] / rate["without"]),
            5,
            True,
        ),
    ]
    extra_us = (p50["with"] - p50["without"]) * 1e6
    log_us = (p50["with + log"] - p50["with"]) * 1e6
    log_pct = 100 * (p50["with + log"] / p50["with"] - 1)
    ratio_rows = "\n".join(r.row(" %") for r in ratios)
    return f"""{common.heading("Metrics interceptor overhead")}

Command: `{common.command("bench.studies.metrics_overhead")}`

{common.machine(load)} Servers up in {times[0]:.1f} s; {plan.rounds} interleaved rounds in \
{times[1]:.1f} s after warm-up: {plan.calls} sequential calls per server and round, then \
{CALLERS} concurrent callers ({plan.burst_s * plan.rounds:.1f} s per row). Every call is an \
`Execute` answered from the memory-store cache (the cheapest call the server has, so the \
interceptor's share is the largest it gets); the client sends raw bytes.

| measurement | n | p50 ms | p90 ms | p99 ms | {CALLERS} concurrent |
|---|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

| overhead | value | target | |
|---|---:|---:|:-:|
{ratio_rows}

The metrics interceptor changes a cache hit's p50 by {extra_us:+.0f} µs (its work: counters and \
a histogram resolved once per method, a handler wrapped per call, the final code read from the \
context). \
The JSON access line at INFO adds another {log_us:.0f} µs ({log_pct:+.1f} %): it is on by \
default at `WOOLLY_LOG_LEVEL=INFO`; health and reflection calls log at DEBUG.
"""


async def run(plan: Plan) -> str:
    """Start the children, warm up, run the rounds, return the report; stop everything."""
    load, begin = common.load_average(), perf_counter()
    children: list[common.Child] = []
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(lambda: asyncio.gather(*(common.stop(p) for p in children)))
        async with asyncio.TaskGroup() as group:
            ports = {
                name: group.create_task(
                    common.spawn("bench.serve_child", children, *flags, quiet=True)
                )
                for name, flags in VARIANTS.items()
            }
        channels = {
            name: await stack.enter_async_context(aio.insecure_channel(f"127.0.0.1:{t.result()}"))
            for name, t in ports.items()
        }
        started = perf_counter() - begin
        bench = Bench(channels)
        await bench.calibrate()
        await bench.round(WARM_UP, 0)
        bench.seq.clear()
        bench.rate.clear()
        start = perf_counter()
        for index in range(plan.rounds):
            await bench.round(plan, index)
        return _report(bench, plan, (started, perf_counter() - start), load)
    raise AssertionError("unreachable")  # the exit stack does not swallow exceptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (~5 s in all)")
    parser.add_argument("--write", action="store_true", help="append to docs/performance.md")
    args = parser.parse_args()
    report = asyncio.run(run(QUICK if args.quick else FULL))
    print(report)
    if args.write:
        common.append_to_doc(report, "# Performance\n")


if __name__ == "__main__":
    main()
