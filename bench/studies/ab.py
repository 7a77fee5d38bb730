"""Before and after a change, in one run: cache hits on another checkout's server and on this one.

    git worktree add /tmp/before <commit>
    python -m bench.studies.ab /tmp/before [--rounds N] [--seconds S]

Starts `bench.serve_child --scripted` from each tree (the other tree's code, this tree's Python
environment), then alternates 64-caller windows of one cached `Execute` between them, and prints
calls/s and the server process's CPU per call for each.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from grpc import aio

from bench import _common as common
from bench.cases import SERVICE, CpuClock, woolly_request

CALLERS = 64


async def start_tree(
    tree: Path,
    *options: str,
    env: Mapping[str, str] | None = None,
    inherited: Mapping[str, str] = os.environ,
) -> tuple[common.Child, int]:
    """`bench.serve_child --scripted` with `tree`'s code, and its port.

    The child gets `inherited` (this process's environment) with `env` over it.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bench.serve_child", "--port", "0", "--scripted", *options),
        cwd=tree,
        stdout=asyncio.subprocess.PIPE,
        # That tree's woolly_grpc, not ours.
        env={**inherited, "PYTHONPATH": str(tree), **(env or {})},
    )
    assert proc.stdout is not None
    return proc, int(await asyncio.wait_for(proc.stdout.readline(), timeout=60))


async def compare(before: Path, rounds: int, seconds: float) -> str:
    """Calls/s and server CPU per call of a cache hit, before and after."""
    trees = {"before": before, "after": common.ROOT}
    request = woolly_request("hit me")
    servers = {name: await start_tree(tree) for name, tree in trees.items()}
    channels = {n: aio.insecure_channel(f"127.0.0.1:{port}") for n, (_, port) in servers.items()}
    try:
        units: dict[str, common.Unit] = {}
        for name, channel in channels.items():
            execute: object = channel.unary_unary(SERVICE + "Execute")
            await common.call(execute, request)
            await common.call(execute, request, expect="hit")
            units[name] = functools.partial(common.call, execute, request)
        clocks = {name: CpuClock(proc.pid) for name, (proc, _) in servers.items()}
        totals = {name: [0, 0.0, 0.0] for name in units}  # calls, seconds, server CPU
        for index in range(rounds + 1):  # round 0 warms up
            for name in list(units)[:: -1 if index % 2 else 1]:
                cpu = clocks[name]()
                calls, elapsed = await common.burst(units[name], seconds, CALLERS)
                if index:
                    total = totals[name]
                    total[0] += calls
                    total[1] += elapsed
                    total[2] += clocks[name]() - cpu
    finally:
        for channel in channels.values():
            await channel.close()
        await asyncio.gather(*(common.stop(proc) for proc, _ in servers.values()))
    return "\n".join(
        f"{name}: {calls / elapsed:,.0f} calls/s, server CPU {cpu / calls * 1e6:.0f} µs per call"
        for name, (calls, elapsed, cpu) in totals.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="a checkout of the code before the change")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0, help="per window")
    args = parser.parse_args()
    print(asyncio.run(compare(args.before.resolve(), args.rounds, args.seconds)))


if __name__ == "__main__":
    main()
