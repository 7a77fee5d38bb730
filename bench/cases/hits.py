"""Case 1: cached Execute and StreamExecute next to the bare echo and the peer's cached answers."""

from __future__ import annotations

import functools
from time import perf_counter
from typing import Any

from bench import _common as common
from bench._common import Ratio, call, pcts
from bench.baseline_echo import STREAM, UNARY, stream_request
from bench.peers import fastapi_sse as peer

from ._base import (
    CALLERS,
    SERVICE,
    CpuClock,
    Plan,
    Report,
    Series,
    Servers,
    peer_request,
    woolly_request,
)


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
        "Execute hit, redis": "woolly Execute hit, Redis (as shipped: hot copy of entries)",
        "Execute hit, redis, no hot copy": "woolly Execute hit, Redis, every hit a GET (before)",
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
        *(
            Ratio(f"cache-hit Execute p50 / echo ({label})", p50(name) / p50(echo), 1.2, True)
            for label, name in HIT_SERVERS
        ),
        *(
            Ratio(f"cache-hit Execute calls/s / echo ({label})", rate(name) / rate(echo), 0.85)
            for label, name in HIT_SERVERS
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
            "cached StreamExecute whole-stream p50, woolly / FastAPI peer (Redis)",
            p50(stream) / p50("peer stream hit"),
            1,
            True,
        ),
    ]


HIT_SERVERS = (("memory", "Execute hit, memory"), ("Redis", "Execute hit, redis"))
"""The woolly servers whose hits have targets against the echo: label, series."""
