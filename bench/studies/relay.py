"""Before and after a change, in one run: uncached 200-chunk streams through each tree's server.

    git worktree add /tmp/before <commit>
    python -m bench.studies.relay /tmp/before [--rounds N] [--concurrent C]

Starts `bench.serve_child --scripted` from each tree (as `bench.studies.ab` does), then
alternates rounds between them. A round is C fresh streams of 200 chunks at once (the scripted
model emits them as fast as the core relays them). It prints, per tree, the median whole-stream
time, the messages a stream arrived in (fewer than its 202 events when deltas were merged) and
the server's CPU per stream.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from grpc import aio

from bench import _common as common
from bench.cases import SERVICE, CpuClock, fresh, woolly_request
from bench.models import directive
from bench.studies.ab import start_tree

CHUNKS = 200


async def compare(before: Path, rounds: int, concurrent: int) -> str:
    """Whole-stream time, messages per stream and server CPU per stream, before and after."""
    trees = {"before": before, "after": common.ROOT}
    servers = {name: await start_tree(tree) for name, tree in trees.items()}
    channels = {n: aio.insecure_channel(f"127.0.0.1:{port}") for n, (_, port) in servers.items()}
    clocks = {name: CpuClock(proc.pid) for name, (proc, _) in servers.items()}
    times: dict[str, list[float]] = {name: [] for name in trees}
    messages: dict[str, list[int]] = {name: [] for name in trees}
    cpu = dict.fromkeys(trees, 0.0)

    async def stream(name: str) -> None:
        multi: object = channels[name].unary_stream(SERVICE + "StreamExecute")
        began = time.perf_counter()
        got = await common.call(multi, woolly_request(fresh(directive(CHUNKS))))
        times[name].append(time.perf_counter() - began)
        messages[name].append(len(got))

    try:
        for index in range(rounds + 1):  # round 0 warms up
            for name in list(trees)[:: -1 if index % 2 else 1]:
                used = clocks[name]()
                await asyncio.gather(*(stream(name) for _ in range(concurrent)))
                if not index:
                    times[name].clear()
                    messages[name].clear()
                else:
                    cpu[name] += clocks[name]() - used
    finally:
        for channel in channels.values():
            await channel.close()
        await asyncio.gather(*(common.stop(proc) for proc, _ in servers.values()))
    streams = rounds * concurrent
    return "\n".join(
        f"{name}: whole stream p50 {statistics.median(times[name]) * 1e3:.1f} ms, "
        f"{statistics.mean(messages[name]):.0f} messages per stream of {CHUNKS + 2} events, "
        f"server CPU {cpu[name] / streams * 1e3:.1f} ms per stream"
        for name in trees
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="a checkout of the code before the change")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrent", type=int, default=1, help="streams at once per round")
    args = parser.parse_args()
    print(asyncio.run(compare(args.before.resolve(), args.rounds, args.concurrent)))


if __name__ == "__main__":
    main()
