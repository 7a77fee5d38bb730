"""Redis round trips per streamed token: run logs written in batches vs one append per event.

`python -m bench.runs [--tokens N] [--write]` drives the real RunManager and RunJournal on a real
redis-server with a fast token stream (no gRPC, no model), once with batching (the default
settings) and once without (`max_batch=1`, no linger), and counts the commands Redis processed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from time import perf_counter

from redis.asyncio import Redis

from bench._common import append_to_doc, command, heading, load_average, machine, start_redis
from woolly_grpc._gen.woolly.v1 import agent_service_pb2
from woolly_grpc.core import AgentResult, AgentType, Completed, Event, Started, TextDelta
from woolly_grpc.run_journal import RunJournal
from woolly_grpc.runs import RunManager
from woolly_grpc.store import RedisStore

INTRO = "Run logs in Redis: round trips per streamed token, batched vs not."


async def tokens(count: int) -> AsyncIterator[Event]:
    yield Started(model="bench", agent_type=AgentType.SUMMARIZER)
    for i in range(count):
        yield TextDelta(f"token {i} ", agent_type=AgentType.SUMMARIZER)
        await asyncio.sleep(0)  # a model streaming as fast as the loop allows
    content = "".join(f"token {i} " for i in range(count))
    yield Completed(AgentResult(AgentType.SUMMARIZER, content), agent_type=AgentType.SUMMARIZER)


async def commands_processed(client: Redis) -> int:
    stats = await client.info("stats")
    return int(stats["total_commands_processed"])


async def measure(url: str, count: int, *, batched: bool) -> tuple[int, float]:
    """(commands Redis processed for one run, seconds until its log was fully written)."""
    store = RedisStore(url)
    journal = RunJournal(store, retention_s=60)
    if not batched:
        journal.linger_s, journal.max_batch = 0.0, 1
    runs = RunManager(journal, max_concurrent=4, orphan_grace_s=60)
    client = Redis.from_url(url)
    try:
        await runs.open()
        before = await commands_processed(client)
        began = perf_counter()
        run_id, _ = runs.start(
            method="StreamExecute",
            request=agent_service_pb2.StreamExecuteRequest(),
            repository="bench",
            agent_types=[AgentType.SUMMARIZER],
            events=lambda: tokens(count),
        )
        await runs.wait(run_id)
        await runs.close()  # waits until the journal has written the whole log
        elapsed = perf_counter() - began
        used = await commands_processed(client) - before - 1  # the INFO call itself
        assert await journal.stored_length(run_id) == count + 2
        return used, elapsed
    finally:
        await client.aclose()
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--write", action="store_true", help="append to docs/performance.md")
    args = parser.parse_args()
    load = load_average()
    async with contextlib.AsyncExitStack() as stack:
        url = await start_redis(stack)
        rows = []
        for batched in (True, False):
            used, elapsed = await measure(url, args.tokens, batched=batched)
            rows.append((batched, used, elapsed))
    events = args.tokens + 2
    lines = [
        heading("Run logs in Redis"),
        "",
        f"Command: `{command('bench.runs')}`",
        "",
        machine(load) + f" One run streaming {args.tokens} tokens ({events} events) as fast as the"
        " event loop allows; commands counted with Redis' `total_commands_processed`.",
        "",
        "| log writes | Redis commands | per token | time to write the whole log |",
        "|---|---:|---:|---:|",
    ]
    for batched, used, elapsed in rows:
        label = "batched (linger 5 ms, up to 512 events)" if batched else "one append per event"
        lines.append(f"| {label} | {used} | {used / args.tokens:.2f} | {elapsed * 1000:.0f} ms |")
    ratio = rows[1][1] / max(rows[0][1], 1)
    lines += ["", f"Batching sends **{ratio:.0f}x** fewer commands for the same log."]
    report = "\n".join(lines)
    print(report)
    if args.write:
        append_to_doc(report, INTRO)


if __name__ == "__main__":
    asyncio.run(main())
