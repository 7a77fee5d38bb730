"""What every case of `bench.suite` shares: the running servers, the plan, requests, CPU clocks.

A case takes the running servers and the plan, and returns its Markdown section and the target
ratios it measured.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil
from grpc import aio

from bench._common import Ratio
from bench.peers import fastapi_sse as peer
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2
from woolly_grpc.api import method_path

SERVICE = method_path("")
CALLERS = 64
LIVE_CHUNKS = 200
Report = tuple[str, list[Ratio]]


@dataclass(frozen=True)
class Plan:
    rounds: int
    calls: int  # sequential unary calls per server and round
    streams: int  # sequential cached streams per server and round
    burst_s: float  # each 64-caller window per server and round
    live_streams: int  # uncached 200-chunk streams per server and round (and at once)
    crowd: int  # concurrent ~1 s streams
    worker_rounds: int  # rounds of load on 1 and on 2 workers, in turn
    worker_burst_s: float  # each window of that load


@dataclass
class Servers:
    """Channels and addresses of the running children."""

    echo: aio.Channel
    woolly: dict[str, aio.Channel]
    """By configuration: memory, redis, redis without its hot copy, memory on uvloop."""
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
