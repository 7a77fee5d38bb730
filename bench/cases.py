"""The cases of `bench.suite`: each measures woolly, the echo baseline and the peer, then reports.

A case takes the running servers and the plan, and returns its Markdown section and the target
ratios it measured.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

import aiohttp
import psutil
from grpc import aio
from redis import asyncio as redis_asyncio

from bench import _common as common
from bench._common import Ratio, call, pcts
from bench.baseline_echo import STREAM, UNARY, stream_request
from bench.models import calls_in, directive, scripted_model
from bench.peers import fastapi_sse as peer
from bench.serve_child import REPOS_ROOT
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2
from woolly_grpc.core import AgentRunner, AgentType, RunRequest

SERVICE = "/woolly.v1.AgentService/"
CALLERS = 64
LIVE_CHUNKS = 200
CROWD_CHUNKS, CROWD_INTERVAL_MS = 11, 100  # 10 gaps of 100 ms: a stream lasts ~1 s
IDENTICAL, THINK_MS = 100, 300
Report = tuple[str, list[Ratio]]


@dataclass(frozen=True)
class Plan:
    rounds: int
    calls: int  # sequential unary calls per server and round
    streams: int  # sequential cached streams per server and round
    burst_s: float  # each 64-caller window per server and round
    live_streams: int  # uncached 200-chunk streams per server and round (and at once)
    crowd: int  # concurrent ~1 s streams


@dataclass
class Servers:
    """Channels and addresses of the running children."""

    echo: aio.Channel
    woolly: dict[str, aio.Channel]
    """By configuration: memory, redis, redis without its local copy, memory on uvloop."""
    woolly_ports: dict[str, int]
    peer_url: str
    session: aiohttp.ClientSession
    pids: dict[str, int]
    calls_files: dict[str, Path]
    """Where the scripted model counts its calls: `memory` (woolly) and `peer`."""
    redis_url: str


def woolly_request(query: str, policy: int = agent_pb2.CACHE_POLICY_UNSPECIFIED) -> bytes:
    """A serialized Execute (or StreamExecute: same fields, same numbers) of the summarizer."""
    return agent_service_pb2.ExecuteRequest(
        repository_name="calculator",
        agent_type=agent_pb2.AGENT_TYPE_SUMMARIZER,
        user_query=query,
        options=agent_pb2.RunOptions(cache_policy=policy),  # type: ignore[arg-type]
    ).SerializeToString()


def peer_request(query: str) -> bytes:
    """The same request as the peer's JSON body."""
    return peer.request_body("calculator", "summarizer", query)


def fresh(text: str) -> str:
    """`text` made unique, so that it misses every cache and joins no run in flight."""
    return f"{text} ({uuid.uuid4().hex[:12]})"


class CpuClock:
    """CPU seconds (user + system) a child process has used."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)

    def __call__(self) -> float:
        times = self._process.cpu_times()
        return times.user + times.system

    def rss(self) -> int:
        """Resident memory, bytes."""
        return int(self._process.memory_info().rss)


@dataclass
class Series:
    """What one kind of call measured over the rounds."""

    server: str
    sequential: list[float] = field(default_factory=list)  # seconds per call
    messages: int = 0  # received by the concurrent callers
    seconds: float = 0.0
    cpu_s: float = 0.0  # the server's CPU during those windows
    per_call: int = 1  # messages per call

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_us_per_message(self) -> float:
        return self.cpu_s / self.messages * 1e6


# ---------------------------------------------------------------- 1. cache hits


async def hits(s: Servers, plan: Plan) -> Report:
    """Cached Execute and StreamExecute next to the echo and the peer's cached answers."""
    query = "Help me understand this code."
    request, body = woolly_request(query), peer_request(query)
    units: dict[str, common.Unit] = {}
    series: dict[str, Series] = {}
    for name, channel in s.woolly.items():
        execute: Any = channel.unary_unary(SERVICE + "Execute")
        await call(execute, request)
        (response,) = await call(execute, request, expect="hit")
        units[f"Execute hit, {name}"] = functools.partial(call, execute, request)
        series[f"Execute hit, {name}"] = Series(name)
    for name in ("memory", "redis"):
        streamer: Any = s.woolly[name].unary_stream(SERVICE + "StreamExecute")
        await call(streamer, request)
        replay = await call(streamer, request, expect="hit")
        units[f"StreamExecute hit, {name}"] = functools.partial(call, streamer, request)
        series[f"StreamExecute hit, {name}"] = Series(name, per_call=len(replay))
    await _peer_hits(s, body, units, series)
    count, total = len(replay), sum(map(len, replay))
    echo_unary: Any = s.echo.unary_unary(UNARY)
    echo_stream: Any = s.echo.unary_stream(STREAM)
    units["echo unary"] = functools.partial(call, echo_unary, b"x" * len(response))
    units["echo stream"] = functools.partial(
        call, echo_stream, stream_request(count, total // count)
    )
    series["echo unary"] = Series("echo")
    series["echo stream"] = Series("echo", per_call=count)
    clocks = {name: CpuClock(pid) for name, pid in s.pids.items()}
    for index in range(plan.rounds + 1):  # round 0 warms up
        for name, unit in units.items():
            for _ in range(plan.streams if series[name].per_call > 1 else plan.calls):
                start = perf_counter()
                await unit()
                if index:
                    series[name].sequential.append(perf_counter() - start)
        for name, unit in list(units.items())[:: -1 if index % 2 else 1]:
            clock = clocks[series[name].server]
            cpu = clock()
            received, seconds = await common.burst(unit, plan.burst_s, CALLERS)
            if index:
                series[name].messages += received
                series[name].seconds += seconds
                series[name].cpu_s += clock() - cpu
    return _hits_report(series, len(response), count, total), _hits_ratios(series)


async def _peer_hits(
    s: Servers, body: bytes, units: dict[str, common.Unit], series: dict[str, Series]
) -> None:
    async def execute() -> list[bytes]:
        response, outcome = await peer.execute(s.session, s.peer_url, body)
        if outcome != "hit":
            raise RuntimeError(f"peer: expected a hit, got {outcome}")
        return [response]

    async def stream() -> list[bytes]:
        events, outcome = await peer.stream(s.session, s.peer_url, body)
        if outcome != "hit":
            raise RuntimeError(f"peer: expected a hit, got {outcome}")
        return events

    await peer.execute(s.session, s.peer_url, body)
    await peer.stream(s.session, s.peer_url, body)
    units["peer execute hit"], units["peer stream hit"] = execute, stream
    series["peer execute hit"] = Series("peer")
    series["peer stream hit"] = Series("peer", per_call=len(await stream()))


def _hits_report(series: dict[str, Series], size: int, count: int, total: int) -> str:
    labels = {
        "echo unary": f"bare grpc.aio echo, unary, {size} B",
        "Execute hit, memory": "woolly Execute hit, memory store",
        "Execute hit, redis": "woolly Execute hit, Redis (as shipped: local copy of hot entries)",
        "Execute hit, redis, no local copy": "woolly Execute hit, Redis, every hit a GET (before)",
        "Execute hit, memory, uvloop": "woolly Execute hit, memory store, uvloop",
        "Execute hit, memory, default gc": "woolly Execute hit, memory store, default GC settings",
        "peer execute hit": "FastAPI peer `POST /v1/execute` hit, Redis",
        "echo stream": f"bare grpc.aio echo, stream of {count} x {total // count} B",
        "StreamExecute hit, memory": f"woolly StreamExecute hit ({count} messages), memory store",
        "StreamExecute hit, redis": "woolly StreamExecute hit, Redis (as shipped)",
        "peer stream hit": "FastAPI peer `POST /v1/stream` hit (SSE), Redis",
    }
    rows = []
    for name, label in labels.items():
        x = series[name]
        p50, _, p99 = (v * 1e3 for v in pcts(x.sequential))
        unit = "msg/s" if x.per_call > 1 else "calls/s"
        rows.append(
            f"| {label} | {len(x.sequential)} | {p50:.2f} | {p99:.2f} | {x.rate:,.0f} {unit} | "
            f"{x.cpu_us_per_message:.0f} |"
        )
    table = "\n".join(rows)
    return f"""### 1. Cache hits

Sequential calls (p50, p99), then {CALLERS} concurrent callers (tasks on one channel or one \
aiohttp session) in windows that alternate order between rounds; the last column is the \
server process's own CPU (user + system) per call or per streamed message during those windows.

| call | n | p50 ms | p99 ms | {CALLERS} callers | server CPU µs per call/message |
|---|---:|---:|---:|---:|---:|
{table}"""


def _hits_ratios(series: dict[str, Series]) -> list[Ratio]:
    def p50(name: str) -> float:
        return pcts(series[name].sequential)[0]

    def rate(name: str) -> float:
        return series[name].rate

    echo, stream = "echo unary", "StreamExecute hit, redis"
    messages = series[stream].per_call
    return [
        Ratio(
            "cache-hit Execute p50 / echo (memory)",
            p50("Execute hit, memory") / p50(echo),
            1.3,
            True,
        ),
        Ratio(
            "cache-hit Execute p50 / echo (Redis)", p50("Execute hit, redis") / p50(echo), 1.3, True
        ),
        Ratio(
            "cache-hit Execute calls/s / echo (memory)",
            rate("Execute hit, memory") / rate(echo),
            0.7,
        ),
        Ratio(
            "cache-hit Execute calls/s / echo (Redis)", rate("Execute hit, redis") / rate(echo), 0.7
        ),
        Ratio(
            "cached StreamExecute msg/s / echo stream, sequential (Redis)",
            p50("echo stream") / p50(stream) * messages / series["echo stream"].per_call,
            0.7,
        ),
        Ratio(
            f"cached StreamExecute msg/s / echo stream, {CALLERS} callers (Redis)",
            rate(stream) / rate("echo stream"),
            0.7,
        ),
        Ratio(
            "cache-hit calls/s, woolly / FastAPI peer (Redis)",
            rate("Execute hit, redis") / rate("peer execute hit"),
            2,
        ),
        Ratio(
            f"cached streamed events/s, woolly / FastAPI peer ({CALLERS} callers, Redis)",
            rate(stream) / rate("peer stream hit"),
            2,
        ),
    ]


# ---------------------------------------------------------------- 2. uncached streams


@dataclass
class Timings:
    first_event: list[float] = field(default_factory=list)
    first_chunk: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    messages: int = 0


async def _timed(events: AsyncIterator[object], timings: Timings) -> None:
    start, count = perf_counter(), 0
    async for _ in events:
        count += 1
        if count <= 2:
            (timings.first_event if count == 1 else timings.first_chunk).append(
                perf_counter() - start
            )
    timings.total.append(perf_counter() - start)
    timings.messages = count


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

    return {
        "agent core in-process, no server": core,
        "woolly StreamExecute": woolly,
        "FastAPI peer SSE": fastapi,
    }


async def live_streams(s: Servers, plan: Plan) -> Report:
    """Uncached streams of 200 chunks: latency to the first event and chunk, cost per chunk."""
    sources = _live_sources(s)
    timings = {name: Timings() for name in sources}
    concurrent: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # events, seconds
    script = directive(LIVE_CHUNKS)
    for index in range(plan.rounds + 1):
        for name, source in sources.items():
            sink = timings[name] if index else Timings()
            for _ in range(plan.live_streams):
                await _timed(source(fresh(script)), sink)
            start, together = perf_counter(), [Timings() for _ in range(plan.live_streams)]
            await asyncio.gather(*(_timed(source(fresh(script)), t) for t in together))
            if index:
                concurrent[name][0] += sum(t.messages for t in together)
                concurrent[name][1] += perf_counter() - start
    core, woolly, fastapi = (pcts(t.total)[0] for t in timings.values())
    rows = []
    for name, t in timings.items():
        first, chunk, total = (pcts(xs)[0] * 1e3 for xs in (t.first_event, t.first_chunk, t.total))
        events, seconds = concurrent[name]
        rows.append(
            f"| {name} | {len(t.total)} | {first:.2f} | {chunk:.2f} | {total:.1f} | "
            f"{t.messages / pcts(t.total)[0]:,.0f} | {events / seconds:,.0f} |"
        )
    table = "\n".join(rows)
    per_chunk = {
        n: (v - core) / LIVE_CHUNKS * 1e6 for n, v in (("woolly", woolly), ("peer", fastapi))
    }
    section = f"""### 2. Uncached streams, {LIVE_CHUNKS} chunks

Each stream is a fresh run (a unique query: no hit, no coalescing) of the scripted model \
emitting {LIVE_CHUNKS} chunks as fast as the agent core relays them. p50 over the rounds; the \
last column runs {plan.live_streams} such streams at once. The first row is the same run in the \
benchmark process with no server: the agent core's own cost.

| source | n | first event ms | first chunk ms | whole stream ms | events/s, one stream \
| events/s, {plan.live_streams} at once |
|---|---:|---:|---:|---:|---:|---:|
{table}

Relay cost per chunk over the bare core (p50 whole stream minus the core's, over \
{LIVE_CHUNKS}): woolly **{per_chunk["woolly"]:.0f} µs**, FastAPI peer \
**{per_chunk["peer"]:.0f} µs**."""
    woolly_rate = concurrent["woolly StreamExecute"][0] / concurrent["woolly StreamExecute"][1]
    peer_rate = concurrent["FastAPI peer SSE"][0] / concurrent["FastAPI peer SSE"][1]
    return section, [
        Ratio(
            f"uncached streamed events/s, woolly / FastAPI peer ({plan.live_streams} at once)",
            woolly_rate / peer_rate,
            2,
        )
    ]


# ---------------------------------------------------------------- 3. a crowd of streams


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
            return len(await call(streamer, woolly_request(query or fresh(self.script))))

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
            "agent core in-process, no server": (core_wall, core_events, 0, 0, core_cpu),
            "woolly, Python's default GC settings (before)": await _crowd(
                [before.stream(i) for i in range(plan.crowd)],
                CpuClock(s.pids["memory, default gc"]),
            ),
            "woolly StreamExecute (as shipped)": await _crowd(
                [shipped.stream(i) for i in range(plan.crowd)], CpuClock(s.pids["memory"])
            ),
            "woolly, one identical query (one run, the rest coalesced)": await _crowd(
                [shipped.stream(i, shared) for i in range(plan.crowd)],
                CpuClock(s.pids["memory"]),
            ),
            "FastAPI peer SSE": await _crowd([fastapi] * plan.crowd, CpuClock(s.pids["peer"])),
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
    return section, [
        Ratio(f"{plan.crowd:,} concurrent 1 s streams, wall seconds", wall, 1.5, True, " s")
    ]


# ---------------------------------------------------------------- 4. identical misses


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


# ---------------------------------------------------------------- 5. Redis round trips


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


async def redis(s: Servers, plan: Plan) -> Report:
    """Redis commands per uncached 200-chunk run and per hit, woolly and the peer."""
    client = redis_asyncio.Redis.from_url(s.redis_url)
    query = fresh(directive(LIVE_CHUNKS))
    request, body = woolly_request(query), peer_request(query)
    shipped: Any = s.woolly["redis"].unary_stream(SERVICE + "StreamExecute")
    before: Any = s.woolly["redis, no local copy"].unary_stream(SERVICE + "StreamExecute")
    try:
        rows = {
            "woolly (as shipped)": (
                await _commands(client, lambda: call(shipped, request, expect="miss")),
                await _commands(client, lambda: call(shipped, request, expect="hit")),
            ),
            "woolly, no local copy": (
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
        [],
    )
