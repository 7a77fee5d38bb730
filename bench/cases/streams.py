"""Cases 2 and 3: uncached streams of 200 chunks, and a crowd of 1,000 concurrent ~1 s streams."""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import aiohttp
import psutil
from grpc import aio

from bench._common import Ratio, call, pcts
from bench.models import directive, scripted_model
from bench.peers import fastapi_sse as peer
from bench.serve_child import REPOS_ROOT
from woolly_grpc._gen.woolly.v1 import agent_service_pb2
from woolly_grpc.core import AgentRunner, AgentType, RunRequest

from ._base import (
    LIVE_CHUNKS,
    SERVICE,
    CpuClock,
    Plan,
    Report,
    Servers,
    fresh,
    peer_request,
    woolly_request,
)

CROWD_CHUNKS, CROWD_INTERVAL_MS = 11, 100  # 10 gaps of 100 ms: a stream lasts ~1 s
CORE, WOOLLY, PEER = "agent core in-process, no server", "woolly StreamExecute", "FastAPI peer SSE"
COALESCED = "woolly, one identical query (one run, the rest coalesced)"


@dataclass
class Timings:
    first_event: list[float] = field(default_factory=list)
    first_chunk: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    messages: int = 0  # received, summed over the streams timed
    events: int = 0  # that those messages carried


async def _timed(events: AsyncIterator[object], timings: Timings, woolly: bool = False) -> None:
    """Time one stream; `woolly`: its messages are woolly's, which may merge deltas."""
    start, count, last = perf_counter(), 0, None
    async for message in events:
        count, last = count + 1, message
        if count <= 2:
            (timings.first_event if count == 1 else timings.first_chunk).append(
                perf_counter() - start
            )
    timings.total.append(perf_counter() - start)
    timings.messages += count
    timings.events += woolly_events(last) if woolly and isinstance(last, bytes) else count


def woolly_events(last: bytes) -> int:
    """Events a woolly stream carried, merged deltas counted as every event they hold: the
    sequence of its last message (sequences number a run's events from 1)."""
    return agent_service_pb2.StreamExecuteResponse.FromString(last).sequence


def _live_sources(s: Servers) -> dict[str, Callable[[str], AsyncIterator[object]]]:
    """Ways to stream one run of a query: woolly, the peer, and the core with no server at all."""
    streamer: Any = s.woolly["memory"].unary_stream(SERVICE + "StreamExecute")
    runner = AgentRunner(model=scripted_model(), repos_root=REPOS_ROOT)

    def woolly(query: str) -> AsyncIterator[object]:
        return aiter(streamer(woolly_request(query), timeout=60))

    def fastapi(query: str) -> AsyncIterator[object]:
        return peer.iter_stream(s.session, s.peer_url, peer_request(query))

    def core(query: str) -> AsyncIterator[object]:
        return runner.stream(RunRequest("calculator", AgentType.SUMMARIZER, query))

    return {CORE: core, WOOLLY: woolly, PEER: fastapi}


async def live_streams(s: Servers, plan: Plan) -> Report:
    """Uncached streams of 200 chunks: latency to the first event and chunk, cost per chunk."""
    sources = _live_sources(s)
    alone = {name: Timings() for name in sources}
    together = {name: Timings() for name in sources}  # `plan.live_streams` at once
    together_s: dict[str, float] = defaultdict(float)
    script = directive(LIVE_CHUNKS)
    for index in range(plan.rounds + 1):  # round 0 warms up
        for name, source in sources.items():
            woolly = name == WOOLLY
            sink = alone[name] if index else Timings()
            for _ in range(plan.live_streams):
                await _timed(source(fresh(script)), sink, woolly)
            sink, start = together[name] if index else Timings(), perf_counter()
            streams = (source(fresh(script)) for _ in range(plan.live_streams))
            await asyncio.gather(*(_timed(stream, sink, woolly) for stream in streams))
            together_s[name] += (perf_counter() - start) if index else 0.0

    def rate(name: str) -> float:
        """Events/s with `plan.live_streams` streams at once."""
        return together[name].events / together_s[name]

    rows = []
    for name, one in alone.items():
        first, chunk, total = (
            pcts(xs)[0] * 1e3 for xs in (one.first_event, one.first_chunk, one.total)
        )
        many = together[name]
        rows.append(
            f"| {name} | {len(one.total)} | {first:.2f} | {chunk:.2f} | {total:.1f} | "
            f"{one.events / sum(one.total):,.0f} | {rate(name):,.0f} | "
            f"{one.messages / len(one.total):.0f} / {many.messages / len(many.total):.0f} |"
        )
    table = "\n".join(rows)
    core, woolly_p50, peer_p50 = (pcts(alone[name].total)[0] for name in sources)
    per_chunk = {
        n: (v - core) / LIVE_CHUNKS * 1e6 for n, v in (("woolly", woolly_p50), ("peer", peer_p50))
    }
    section = f"""### 2. Uncached streams, {LIVE_CHUNKS} chunks

Each stream is a fresh run (a unique query: no hit, no coalescing) of the scripted model \
emitting {LIVE_CHUNKS} chunks ({LIVE_CHUNKS + 2} events) as fast as the agent core relays them. \
First event, first chunk and whole stream are p50s of streams one at a time; events/s are \
events received over the time spent receiving them, one stream at a time and \
{plan.live_streams} at once. The last column is messages per stream, alone / \
{plan.live_streams} at once: woolly merges the text deltas a reader is behind on (contract \
§1), so a busy reader gets fewer messages than events. The first row is the same run in the \
benchmark process with no server: the agent core's own cost.

| source | n | first event ms | first chunk ms | whole stream ms | events/s, one stream \
| events/s, {plan.live_streams} at once | messages per stream |
|---|---:|---:|---:|---:|---:|---:|---:|
{table}

Relay cost per chunk over the bare core (p50 whole stream minus the core's, over \
{LIVE_CHUNKS}): woolly **{per_chunk["woolly"]:.0f} µs**, FastAPI peer \
**{per_chunk["peer"]:.0f} µs**."""

    merged = together[WOOLLY]
    return section, [
        Ratio(
            "relay cost per chunk, woolly / FastAPI peer",
            # A peer no slower than the bare core (noise) leaves no ratio to speak of.
            per_chunk["woolly"] / per_chunk["peer"] if per_chunk["peer"] > 0 else math.inf,
            1,
            True,
        ),
        Ratio(
            f"uncached streamed events/s, woolly / FastAPI peer ({plan.live_streams} at once)",
            rate(WOOLLY) / rate(PEER),
            1.5,
        ),
        Ratio(
            f"messages per event, {plan.live_streams} uncached streams at once (merged deltas)",
            merged.messages / merged.events,
            0.9,
            True,
        ),
    ]


async def _crowd(
    streams: Sequence[Callable[[], Awaitable[int]]], clock: CpuClock | None
) -> tuple[float, int, int, int, float]:
    """Run every stream at once: wall s, events, failures, peak RSS growth, CPU s."""
    before = clock.rss() if clock else 0
    peak, cpu = before, clock() if clock else 0.0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set() and clock:
            peak = max(peak, clock.rss())
            await asyncio.sleep(0.02)  # a measurement interval, not synchronisation

    sampler = asyncio.create_task(sample())
    start = perf_counter()
    results = await asyncio.gather(*(stream() for stream in streams), return_exceptions=True)
    wall = perf_counter() - start
    done.set()
    await sampler
    events = sum(r for r in results if isinstance(r, int))
    failures = sum(1 for r in results if isinstance(r, BaseException))
    used = (clock() - cpu) if clock else 0.0
    return wall, events, failures, peak - before, used


class _WoollyCrowd:
    """Fresh ~1 s streams to one woolly server, over 8 channels."""

    def __init__(self, port: int, script: str) -> None:
        self.channels = [aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(8)]
        self.streamers: list[Any] = [
            c.unary_stream(SERVICE + "StreamExecute") for c in self.channels
        ]
        self.script = script

    async def warm_up(self) -> None:
        for streamer in self.streamers:
            await call(streamer, woolly_request(fresh("warm up")))

    def stream(self, index: int, query: str = "") -> Callable[[], Awaitable[int]]:
        """A fresh run, or a stream of `query` (the same query coalesces onto one run)."""
        streamer = self.streamers[index % len(self.streamers)]

        async def one() -> int:
            messages = await call(streamer, woolly_request(query or fresh(self.script)))
            return woolly_events(messages[-1])

        return one

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


async def crowd(s: Servers, plan: Plan) -> Report:
    """`plan.crowd` concurrent uncached streams of ~1 s each: wall time and memory."""
    script = directive(CROWD_CHUNKS, interval_ms=CROWD_INTERVAL_MS)
    runner = AgentRunner(model=scripted_model(), repos_root=REPOS_ROOT)
    shipped = _WoollyCrowd(s.woolly_ports["memory"], script)
    before = _WoollyCrowd(s.woolly_ports["memory, default gc"], script)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    try:
        await shipped.warm_up()
        await before.warm_up()

        async def core() -> int:
            request = RunRequest("calculator", AgentType.SUMMARIZER, fresh(script))
            return sum([1 async for _ in runner.stream(request)])

        async def fastapi() -> int:
            events, _ = await peer.stream(session, s.peer_url, peer_request(fresh(script)))
            return len(events)

        shared = fresh(script)
        process = psutil.Process()
        cpu = process.cpu_times()
        core_wall, core_events, _, _, _ = await _crowd([core] * plan.crowd, None)
        core_cpu = sum(process.cpu_times()[:2]) - sum(cpu[:2])
        rows = {
            CORE: (core_wall, core_events, 0, 0, core_cpu),
            "woolly, Python's default GC settings (before)": await _crowd(
                [before.stream(i) for i in range(plan.crowd)],
                CpuClock(s.pids["memory, default gc"]),
            ),
            "woolly StreamExecute (as shipped)": await _crowd(
                [shipped.stream(i) for i in range(plan.crowd)], CpuClock(s.pids["memory"])
            ),
            COALESCED: await _crowd(
                [shipped.stream(i, shared) for i in range(plan.crowd)],
                CpuClock(s.pids["memory"]),
            ),
            PEER: await _crowd([fastapi] * plan.crowd, CpuClock(s.pids["peer"])),
        }
    finally:
        await session.close()
        await shipped.close()
        await before.close()
    lines = "\n".join(
        f"| {name} | {wall:.2f} | {events:,} | {failures} | {grown / 2**20:.1f} | "
        f"{grown / plan.crowd / 1024:.1f} | {cpu_s:.2f} |"
        for name, (wall, events, failures, grown, cpu_s) in rows.items()
    )
    section = f"""### 3. {plan.crowd:,} concurrent streams of ~1 s

{plan.crowd:,} fresh runs at once, each streaming {CROWD_CHUNKS} chunks {CROWD_INTERVAL_MS} ms \
apart (~1 s of model time); woolly's run limit raised to allow them \
(`WOOLLY_MAX_CONCURRENT_RUNS`). Woolly's streams go over 8 channels, the peer's over one \
HTTP/1.1 connection each. RSS growth is the server's peak resident memory during the crowd \
minus its resident memory before; CPU is the server process's (for the core row: this \
process's). Every process, the benchmark's included, runs with the collector settings \
`woolly-grpc serve` sets (`tune_gc`), except the row marked "before".

| server | wall s | events | failed | RSS growth MiB | per stream KiB | CPU s |
|---|---:|---:|---:|---:|---:|---:|
{lines}"""
    wall = rows["woolly StreamExecute (as shipped)"][0]
    crowd = f"{plan.crowd:,} concurrent fresh ~1 s streams"
    return section, [
        Ratio(f"{crowd}, wall, woolly / FastAPI peer", wall / rows[PEER][0], 1, True),
        Ratio(f"{crowd}, wall, woolly / agent core in-process", wall / core_wall, 1.3, True),
        Ratio(
            f"{plan.crowd:,} concurrent streams of one query (coalesced), wall",
            rows[COALESCED][0],
            1.5,
            True,
            " s",
        ),
    ]
