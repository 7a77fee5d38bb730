"""Redis commands and bytes per streamed token: the journal's writer with its linger, and without.

`python -m bench.studies.runs [--tokens N] [--pace-ms M] [--write]` drives the real RunManager and
RunJournal on a real redis-server with a token stream (no gRPC, no model; a token every M ms, 0 =
as fast as the event loop allows), as shipped (linger 50 ms), with a 5 ms linger, and with none
(a write whenever the writer is free), and counts the commands Redis processed and the bytes it
received.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncGenerator
from time import perf_counter

from redis.asyncio import Redis

from bench._common import append_to_doc, command, heading, load_average, machine, start_redis
from woolly_grpc._gen.woolly.v1 import agent_service_pb2
from woolly_grpc.config import Settings
from woolly_grpc.core import AgentResult, AgentType, Completed, Event, Started, TextDelta
from woolly_grpc.runs import RunJournal, RunManager
from woolly_grpc.runs.keys import log_key
from woolly_grpc.store import RedisStore

INTRO = "Run logs in Redis: round trips per streamed token, batched vs not."


async def tokens(count: int, pace_s: float) -> AsyncGenerator[Event]:
    yield Started(model="bench", agent_type=AgentType.SUMMARIZER)
    for i in range(count):
        yield TextDelta(f"token {i} ", agent_type=AgentType.SUMMARIZER)
        await asyncio.sleep(pace_s)  # a model's pace (0: as fast as the loop allows)
    content = "".join(f"token {i} " for i in range(count))
    yield Completed(AgentResult(AgentType.SUMMARIZER, content), agent_type=AgentType.SUMMARIZER)


async def processed(client: Redis) -> tuple[int, int]:
    """Commands Redis processed and bytes it received, so far."""
    stats = await client.info("stats")
    return int(stats["total_commands_processed"]), int(stats["total_net_input_bytes"])


VARIANTS = {
    "linger 50 ms (as shipped)": 0.05,
    "linger 5 ms": 0.005,
    "no linger": 0.0,
}


async def measure(url: str, count: int, pace_s: float, linger_s: float) -> tuple[int, int, float]:
    """Commands and bytes Redis got for one run, and seconds until its log was fully written."""
    store = RedisStore(url)
    journal = RunJournal(
        store, replica="bench", retention_s=60, lease_s=10, linger_s=linger_s, recheck_s=1.0
    )
    runs = RunManager(journal, Settings(max_concurrent_runs=4, orphan_grace_s=60))
    client = Redis.from_url(url)
    try:
        await runs.open()
        before = await processed(client)
        began = perf_counter()
        run_id, _ = await runs.start(
            method="StreamExecute",
            request=agent_service_pb2.StreamExecuteRequest(),
            repository="bench",
            agent_types=[AgentType.SUMMARIZER],
            events=lambda _meter: tokens(count, pace_s),
            tenant="",
        )
        await runs.wait(run_id, tenant="")
        await runs.close()  # waits until the journal has written the whole log
        elapsed = perf_counter() - began
        after = await processed(client)
        used, received = after[0] - before[0] - 1, after[1] - before[1]  # less the INFO call
        assert len(await store.read(log_key(run_id))) == count + 2
        return used, received, elapsed
    finally:
        await client.aclose()
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--pace-ms", type=float, default=5.0, help="between tokens")
    parser.add_argument("--write", action="store_true", help="append to docs/performance.md")
    args = parser.parse_args()
    load = load_average()
    async with contextlib.AsyncExitStack() as stack:
        url = await start_redis(stack)
        rows = []
        for label, linger_s in VARIANTS.items():
            used, received, elapsed = await measure(url, args.tokens, args.pace_ms / 1e3, linger_s)
            rows.append((label, used, received, elapsed))
    events = args.tokens + 2
    lines = [
        heading("Run logs in Redis"),
        "",
        f"Command: `{command('bench.studies.runs')}`",
        "",
        machine(load) + f" One run streaming {args.tokens} tokens ({events} events), one every "
        f"{args.pace_ms:g} ms; commands counted with Redis' `total_commands_processed`.",
        "",
        "| log writes | Redis commands | per token | KiB Redis received | time to write the "
        "whole log |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, used, received, elapsed in rows:
        lines.append(
            f"| {label} | {used} | {used / args.tokens:.2f} | {received / 1024:,.0f} | "
            f"{elapsed * 1000:.0f} ms |"
        )
    shipped, short, none = (used for _, used, _, _ in rows)
    lines += [
        "",
        f"As shipped, a run sends **{none / max(shipped, 1):.1f}x** fewer commands than with no "
        f"linger, and {short / max(shipped, 1):.1f}x fewer than with a 5 ms linger.",
    ]
    report = "\n".join(lines)
    print(report)
    if args.write:
        append_to_doc(report, INTRO)


if __name__ == "__main__":
    asyncio.run(main())
