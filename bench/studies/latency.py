"""Loopback latency of woolly's Execute / StreamExecute against a bare grpc.aio echo, in one run.

Both servers run as child processes (bench.serve_child, bench.baseline_echo); this process is the
client only. Rounds interleave every measurement so that noise on the shared machine hits all alike.

    python -m bench.studies.latency [--seconds S] [--quick] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from time import perf_counter

from grpc import aio

from bench._common import (
    DOC,
    Child,
    append_to_doc,
    command,
    heading,
    load_average,
    machine,
    pcts,
    spawn,
    stop,
)
from bench.baseline_echo import STREAM, UNARY, stream_request
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2
from woolly_grpc._gen.woolly.v1.agent_service_pb2_grpc import AgentServiceStub

MIN_ECHO, MIN_EXECUTE = 200, 30
ECHO_PER_ROUND, EXECUTE_PER_ROUND = 50, 5
EXECUTE = agent_service_pb2.ExecuteRequest(
    repository_name="calculator",
    agent_type=agent_pb2.AGENT_TYPE_SUMMARIZER,
    user_query="Help me understand this code.",
    # Measure the agent every time, also once the result cache exists.
    options=agent_pb2.RunOptions(cache_policy=agent_pb2.CACHE_POLICY_BYPASS),
)
# The same fields with the same numbers.
STREAM_EXECUTE = agent_service_pb2.StreamExecuteRequest.FromString(EXECUTE.SerializeToString())

INTRO = """# Performance

`python -m bench.studies.latency` times, in one run, woolly's `Execute` and `StreamExecute`
(summarizer, local engine, fixture repository `calculator`) next to a bare grpc.aio echo server (no
woolly code, no codegen) sent the same sizes: a unary message as large as the `ExecuteResponse`, a
stream of as many messages and bytes as one `StreamExecute` run. Calls are sequential; each server
runs in its own child process, the benchmark process is only the client (loopback, asyncio loop);
after a warm-up, rounds interleave all measurements so that noise hits them alike. The machine is a
2-core VM shared with other work: absolute numbers mean little, the ratios within one run matter.

The local engine really reads the repository (file I/O and `ast`) on every uncached call, so
`Execute` here costs mostly the agent, not gRPC; the result cache (a later issue) is what should
bring a repeated call close to the bare echo.
"""


@dataclass
class Samples:
    """Seconds per measurement (messages for `stream_messages`)."""

    echo: list[float] = field(default_factory=list)
    execute: list[float] = field(default_factory=list)
    first_event: list[float] = field(default_factory=list)
    first_delta: list[float] = field(default_factory=list)
    stream_total: list[float] = field(default_factory=list)
    stream_messages: list[float] = field(default_factory=list)
    echo_stream: list[float] = field(default_factory=list)


class Bench:
    """One channel to each server and the calls to time."""

    def __init__(self, echo: aio.Channel, woolly: aio.Channel) -> None:
        self.unary: aio.UnaryUnaryMultiCallable[bytes, bytes] = echo.unary_unary(UNARY)
        self.stream: aio.UnaryStreamMultiCallable[bytes, bytes] = echo.unary_stream(STREAM)
        self.stub = AgentServiceStub(woolly)
        self.s = Samples()

    async def calibrate(self) -> None:
        """Mimic the sizes of an ExecuteResponse and of one StreamExecute run."""
        response = await self.stub.Execute(EXECUTE, timeout=30)
        events = [e async for e in self.stub.StreamExecute(STREAM_EXECUTE, timeout=30)]
        total = sum(len(e.SerializeToString()) for e in events)
        self.sizes = len(response.SerializeToString()), len(events), total
        self.payload = b"x" * self.sizes[0]
        self.echo_stream_request = stream_request(len(events), total // len(events))

    async def round(self, echo_calls: int, executes: int) -> None:
        """Echo calls, then Executes, then one StreamExecute and one echo stream."""
        s = self.s
        for _ in range(echo_calls):
            start = perf_counter()
            await self.unary(self.payload, timeout=10)
            s.echo.append(perf_counter() - start)
        for _ in range(executes):
            start = perf_counter()
            await self.stub.Execute(EXECUTE, timeout=30)
            s.execute.append(perf_counter() - start)
        await self.stream_execute()
        start = perf_counter()
        async for _ in self.stream(self.echo_stream_request, timeout=30):
            pass
        s.echo_stream.append(perf_counter() - start)

    async def stream_execute(self) -> None:
        start, count, first_delta = perf_counter(), 0, None
        async for event in self.stub.StreamExecute(STREAM_EXECUTE, timeout=30):
            now, kind = perf_counter() - start, event.WhichOneof("event")
            if count == 0:
                assert kind == "started", kind
                self.s.first_event.append(now)
            if first_delta is None and kind == "text_delta":
                first_delta = now
                self.s.first_delta.append(now)
            count += 1
        self.s.stream_total.append(perf_counter() - start)
        self.s.stream_messages.append(count)


def _report(s: Samples, sizes: tuple[int, int, int], rounds: int, seconds: float, load: str) -> str:
    size, count, total = sizes

    def row(name: str, xs: list[float]) -> str:
        p50, p90, p99 = (f"{v * 1e3:.2f}" for v in pcts(xs))
        return f"| {name} | {len(xs)} | {p50} | {p90} | {p99} |"

    echo50, exec50 = pcts(s.echo)[0], pcts(s.execute)[0]
    stream50, echo_stream50 = pcts(s.stream_total)[0], pcts(s.echo_stream)[0]
    return f"""{heading()}

Command: `{command("bench.studies.latency")}`

{machine(load)} {rounds} rounds in {seconds:.1f} s after warm-up.

| measurement | n | p50 ms | p90 ms | p99 ms |
|---|---:|---:|---:|---:|
{row(f"echo unary, {size} B (= ExecuteResponse)", s.echo)}
{row("woolly Execute (summarizer, uncached)", s.execute)}
{row("woolly StreamExecute: first event (`started`)", s.first_event)}
{row("woolly StreamExecute: first `text_delta`", s.first_delta)}
{row(f"woolly StreamExecute: total ({count} messages, {total} B)", s.stream_total)}
{row(f"echo stream: total ({count} x {total // count} B)", s.echo_stream)}

Messages per StreamExecute run: {min(s.stream_messages):.0f}-{max(s.stream_messages):.0f}. \
Ratios (p50): Execute / echo unary = **{exec50 / echo50:.1f}x**; \
StreamExecute total / echo stream total = **{stream50 / echo_stream50:.1f}x**.
"""


async def run(seconds: float) -> str:
    """Start both servers, warm up, measure for `seconds` (and at least the minimum counts)."""
    load = load_average()
    children: list[Child] = []
    try:
        async with asyncio.TaskGroup() as group:
            echo_port = group.create_task(spawn("bench.baseline_echo", children))
            woolly_port = group.create_task(spawn("bench.serve_child", children))
        async with (
            aio.insecure_channel(f"127.0.0.1:{echo_port.result()}") as echo,
            aio.insecure_channel(f"127.0.0.1:{woolly_port.result()}") as woolly,
        ):
            bench = Bench(echo, woolly)
            await bench.calibrate()
            for _ in range(3):  # warm-up: 300 echo calls, 3 of everything else
                await bench.round(echo_calls=100, executes=1)
            s = bench.s = Samples()
            start, rounds = perf_counter(), 0
            while (
                perf_counter() - start < seconds
                or len(s.echo) < MIN_ECHO
                or len(s.execute) < MIN_EXECUTE
            ):
                await bench.round(ECHO_PER_ROUND, EXECUTE_PER_ROUND)
                rounds += 1
            return _report(s, bench.sizes, rounds, perf_counter() - start, load)
    finally:
        await asyncio.gather(*(stop(p) for p in children))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, help="measuring time (default 16, --quick 1)")
    parser.add_argument("--quick", action="store_true", help="a short run (~6 s in all)")
    parser.add_argument("--write", action="store_true", help=f"append the result to {DOC}")
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else (1.0 if args.quick else 16.0)
    report = asyncio.run(run(seconds))
    print(report)
    if args.write:
        append_to_doc(report, INTRO)


if __name__ == "__main__":
    main()
