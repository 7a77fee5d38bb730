"""Where a woolly server's time goes, under one workload: cProfile in the server, summed by layer.

    python -m bench.studies.profile {hits,live,crowd,echo} [--seconds S] [--top N]

Starts `bench.serve_child --scripted --profile …` (for `echo`, the bare grpc.aio echo server,
`bench.baseline_echo --profile …`), drives it for S seconds from this process,
stops it, and prints the server's own CPU time by layer (woolly, pydantic-ai, grpc, protobuf,
asyncio, …) and its top functions by own time. cProfile slows Python code roughly 2x, C code
not at all, so shares are a guide, not a measurement; `bench.suite` measures.

- `hits`: 16 callers repeating one cached Execute;
- `live`: 4 callers each streaming fresh (uncached) runs of 200 chunks;
- `crowd`: 200 fresh runs at once, 11 chunks 10 ms apart, over and over;
- `echo`: 16 callers of the bare echo, as large as a cached ExecuteResponse (the floor of `hits`).
"""

from __future__ import annotations

import argparse
import asyncio
import pstats
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from grpc import aio

from bench import _common as common
from bench.baseline_echo import UNARY
from bench.cases import SERVICE, fresh, woolly_request
from bench.models import directive

LAYERS = (
    ("woolly_grpc/", "woolly_grpc"),
    ("pydantic_ai/", "pydantic-ai"),
    ("pydantic_graph/", "pydantic-ai"),
    ("anyio/", "anyio (used by pydantic-ai)"),
    ("grpc/", "grpc (Python and Cython)"),
    ("google/protobuf", "protobuf"),
    ("asyncio/", "asyncio"),
    ("prometheus_client/", "prometheus-client"),
    ("redis/", "redis-py"),
)
WORKLOADS = {"hits": (16, ""), "live": (4, directive(200)), "crowd": (200, ""), "echo": (16, "")}
ECHO_BYTES = 2092
"""A cached ExecuteResponse of the scripted model."""


def _layer(filename: str, function: str) -> str:
    for marker, layer in LAYERS:
        if marker in filename:
            return layer
    if filename == "~":  # a C function: grpc's cygrpc shows up as its method names
        return "C functions (protobuf, hashlib, grpc core calls, …)"
    return "other Python"


async def _drive(port: int, workload: str, seconds: float) -> int:
    callers, script = WORKLOADS[workload]
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        execute: Any = channel.unary_unary(SERVICE + "Execute")
        stream: Any = channel.unary_stream(SERVICE + "StreamExecute")
        echo: Any = channel.unary_unary(UNARY)
        if workload != "echo":
            await common.call(execute, woolly_request("profile me"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds

        async def caller() -> int:
            done = 0
            while loop.time() < deadline:
                if workload == "echo":
                    await echo(b"x" * ECHO_BYTES, timeout=60)
                elif workload == "hits":
                    await execute(woolly_request("profile me"), timeout=60)
                elif workload == "live":
                    await common.call(stream, woolly_request(fresh(script)))
                else:
                    crowd = directive(11, interval_ms=10)
                    await common.call(stream, woolly_request(fresh(crowd)))
                done += 1
            return done

        return sum(await asyncio.gather(*(caller() for _ in range(callers))))


async def profile(workload: str, seconds: float) -> tuple[pstats.Stats, int]:
    """The server's stats under `workload`, and how many calls it served."""
    with tempfile.TemporaryDirectory(prefix="woolly-profile-") as directory:
        stats_file = Path(directory) / "server.pstats"
        children: list[common.Child] = []
        try:
            profiled = ("--profile", str(stats_file))
            if workload == "echo":
                port = await common.spawn("bench.baseline_echo", children, *profiled)
            else:
                port = await common.spawn("bench.serve_child", children, "--scripted", *profiled)
            calls = await _drive(port, workload, seconds)
        finally:
            await asyncio.gather(*(common.stop(child) for child in children))
        return pstats.Stats(str(stats_file)), calls


def report(stats: pstats.Stats, calls: int, top: int) -> str:
    """Own time by layer, then the top functions by own time."""
    by_layer: Counter[str] = Counter()
    rows = []
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, line, function), (_, _, own, _, _) in entries.items():
        by_layer[_layer(filename, function)] += own
        rows.append((own, f"{Path(filename).name}:{line}({function})"))
    total = sum(by_layer.values())
    lines = [f"{calls} calls; {total:.2f} s of profiled CPU, {total / calls * 1e6:.0f} µs per call"]
    lines += [f"{share / total:6.1%}  {layer}" for layer, share in by_layer.most_common()]
    lines.append("top functions by own time:")
    lines += [f"{own / total:6.1%}  {name}" for own, name in sorted(rows, reverse=True)[:top]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    stats, calls = asyncio.run(profile(args.workload, args.seconds))
    print(report(stats, calls, args.top))


if __name__ == "__main__":
    main()
