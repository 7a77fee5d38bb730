"""Cases 4 and 5: identical concurrent misses (model calls), and Redis commands per run and hit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from redis import asyncio as redis_asyncio

from bench._common import Ratio, call
from bench.models import calls_in, directive
from bench.peers import fastapi_sse as peer

from ._base import (
    LIVE_CHUNKS,
    SERVICE,
    Plan,
    Report,
    Servers,
    fresh,
    peer_request,
    woolly_request,
)

IDENTICAL, THINK_MS = 100, 300


async def coalescing(s: Servers, plan: Plan) -> Report:
    """100 identical uncached calls at once: how often the model ran behind each server."""
    script = directive(24, think_ms=THINK_MS)
    query = fresh(script)
    execute: Any = s.woolly["memory"].unary_unary(SERVICE + "Execute")
    before = {name: calls_in(path) for name, path in s.calls_files.items()}
    request, body = woolly_request(query), peer_request(query)

    async def woolly() -> str:
        rpc = execute(request, timeout=60)
        await rpc
        return str((await rpc.trailing_metadata()).get("woolly-cache"))

    outcomes = await asyncio.gather(*(woolly() for _ in range(IDENTICAL)))
    peers = await asyncio.gather(
        *(peer.execute(s.session, s.peer_url, body) for _ in range(IDENTICAL))
    )
    calls = {name: calls_in(path) - before[name] for name, path in s.calls_files.items()}
    woolly_outcomes = _tally(outcomes)
    peer_outcomes = _tally([outcome for _, outcome in peers])
    section = f"""### 4. {IDENTICAL} identical concurrent misses

{IDENTICAL} identical `Execute` calls at once, for a query nobody asked before; the model thinks \
{THINK_MS} ms, then streams. Model calls are counted by the scripted model itself.

| server | model calls | outcomes |
|---|---:|---|
| woolly (memory store) | {calls["memory"]} | {woolly_outcomes} |
| FastAPI peer (Redis cache, no coalescing) | {calls["peer"]} | {peer_outcomes} |"""
    return section, [
        Ratio(f"{IDENTICAL} identical misses, model calls", calls["memory"], 1, True, "")
    ]


def _tally(outcomes: list[str]) -> str:
    """`99 coalesced, 1 miss`."""
    return ", ".join(f"{outcomes.count(o)} {o}" for o in sorted(set(outcomes)))


async def _processed(client: redis_asyncio.Redis) -> int:
    return int((await client.info("stats"))["total_commands_processed"])


async def _quiet(client: redis_asyncio.Redis) -> None:
    """Wait (up to 5 s) until Redis hears nothing but us: earlier cases may still be writing."""
    for _ in range(25):
        before = await _processed(client)
        await asyncio.sleep(0.2)  # a measurement window, bench only
        if await _processed(client) - before == 1:  # our own INFO
            return


async def _commands(client: redis_asyncio.Redis, action: Callable[[], Awaitable[object]]) -> int:
    """Redis commands an action caused (its last asynchronous writes included)."""
    await _quiet(client)
    info = await client.info("stats")
    await action()
    await asyncio.sleep(0.3)  # let batched log writes and the final record land (bench only)
    after = await client.info("stats")
    return int(after["total_commands_processed"]) - int(info["total_commands_processed"]) - 1


SHIPPED = "woolly (as shipped)"


async def redis(s: Servers, plan: Plan) -> Report:
    """Redis commands per uncached 200-chunk run and per hit, woolly and the peer."""
    client = redis_asyncio.Redis.from_url(s.redis_url)
    query = fresh(directive(LIVE_CHUNKS))
    request, body = woolly_request(query), peer_request(query)
    shipped: Any = s.woolly["redis"].unary_stream(SERVICE + "StreamExecute")
    before: Any = s.woolly["redis, no hot copy"].unary_stream(SERVICE + "StreamExecute")
    try:
        rows = {
            SHIPPED: (
                await _commands(client, lambda: call(shipped, request, expect="miss")),
                await _commands(client, lambda: call(shipped, request, expect="hit")),
            ),
            "woolly, no hot copy": (
                None,
                await _commands(client, lambda: call(before, request, expect="hit")),
            ),
            "FastAPI peer": (
                await _commands(client, lambda: peer.stream(s.session, s.peer_url, body)),
                await _commands(client, lambda: peer.stream(s.session, s.peer_url, body)),
            ),
        }
    finally:
        await client.aclose()
    lines = "\n".join(
        f"| {name} | {'-' if run is None else run} | {hit} |" for name, (run, hit) in rows.items()
    )
    return (
        f"""### 5. Redis commands

Commands Redis processed (`INFO stats`) for one uncached `StreamExecute` of {LIVE_CHUNKS} \
chunks ({LIVE_CHUNKS + 2} events: the run record, its event log and the cache entry) and for \
one cached replay of it.

| server | per uncached run | per hit |
|---|---:|---:|
{lines}""",
        [
            Ratio(
                f"Redis commands per uncached {LIVE_CHUNKS}-chunk run",
                rows[SHIPPED][0] or 0,
                20,
                True,
                "",
            )
        ],
    )
