"""Time to a stream's first event with runs in Redis, on another checkout's server and this one.

    git worktree add /tmp/before <commit>
    python -m bench.studies.first_event /tmp/before [--rounds N] [--calls C]

Starts one redis-server, then `bench.serve_child --scripted --cache-url redis://…` from each tree
(the other tree's code, this tree's Python environment), and alternates rounds of C sequential
uncached StreamExecute calls (CACHE_POLICY_BYPASS) between them, timing each call's first
message. Prints p50 / p90 / p99 per tree. What it shows: the cost of writing a run's record,
request and owner lease to Redis before the caller gets `started`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path
from time import perf_counter

from grpc import aio

from bench import _common as common
from bench.cases import SERVICE, woolly_request
from bench.studies.ab import start_tree
from woolly_grpc._gen.woolly.v1 import agent_pb2


async def first_event_s(stream: object, request: bytes) -> float:
    """Seconds from the call to its first message; the rest of the stream is read too."""
    started = perf_counter()
    call = stream(request, timeout=60)  # type: ignore[operator]
    first: float | None = None
    async for _ in call:
        if first is None:
            first = perf_counter() - started
    assert first is not None
    return first


async def compare(before: Path, rounds: int, calls: int) -> str:
    trees = {"before": before, "after": common.ROOT}
    async with contextlib.AsyncExitStack() as stack:
        url = await common.start_redis(stack)
        servers = {name: await start_tree(tree, "--cache-url", url) for name, tree in trees.items()}
        for proc, _ in servers.values():
            stack.push_async_callback(common.stop, proc)
        channels = {
            name: aio.insecure_channel(f"127.0.0.1:{port}") for name, (_, port) in servers.items()
        }
        for channel in channels.values():
            stack.push_async_callback(channel.close)
        streams: dict[str, object] = {
            name: channel.unary_stream(SERVICE + "StreamExecute")
            for name, channel in channels.items()
        }
        times: dict[str, list[float]] = {name: [] for name in trees}
        serial = 0
        for index in range(rounds + 1):  # round 0 warms up
            for name in list(streams)[:: -1 if index % 2 else 1]:
                for _ in range(calls):
                    serial += 1
                    request = woolly_request(f"first {serial}", agent_pb2.CACHE_POLICY_BYPASS)
                    took = await first_event_s(streams[name], request)
                    if index:
                        times[name].append(took)
    lines = []
    for name, samples in times.items():
        p50, p90, p99 = common.pcts(samples)
        lines.append(
            f"{name}: first event p50 {p50 * 1e3:.2f} ms, p90 {p90 * 1e3:.2f} ms, "
            f"p99 {p99 * 1e3:.2f} ms ({len(samples)} calls)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="a checkout of the code before the change")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=50, help="per tree per round")
    args = parser.parse_args()
    print(asyncio.run(compare(args.before.resolve(), args.rounds, args.calls)))


if __name__ == "__main__":
    main()
