"""The GetServerStatus snapshot: version, uptime, resources, dependencies, runs, calls by code.

It never fails because a dependency is down: every probe is bounded by a short timeout and a
failure is reported (reachable = false, with the error), not raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from google.protobuf import duration_pb2
from pydantic_ai.mcp import MCPToolset

from ._gen.woolly.v1 import agent_service_pb2 as pb
from .api import VERSION
from .cache import ResultCache
from .core.models import ModelHealth, Models
from .observability.logs import redact_urls
from .observability.metrics import Metrics
from .runs import RunManager
from .saved_agents import AgentDatabase

PROBE_TIMEOUT_S = 0.5
"""Longest any one probe (cache ping, MCP tool listing, disk) may take."""


_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Probed:
    """A probe's outcome: how long it took and what it found, or why it failed."""

    seconds: float
    value: object = None
    error: str = ""
    raised: BaseException | None = None


class StatusReporter:
    """Gathers the server's status from its parts; `serving` is kept by the server's lifecycle.

    Args:
        model: The model name the agents use.
        repos_root: The repositories root (its disk is reported).
        mcp_url: The MCP server whose tools the agents use; None for the built-in tools.
        builtin_tools: How many built-in tools the agents have (when there is no MCP server).
        runs: For active runs and the concurrency limit.
        cache: For the backend's ping and the hit ratio.
        metrics: For the calls handled by code.
        timeout_s: The bound on each probe.
    """

    def __init__(
        self,
        *,
        model: str,
        repos_root: Path,
        mcp_url: str | None,
        builtin_tools: int,
        runs: RunManager,
        cache: ResultCache,
        metrics: Metrics,
        database: AgentDatabase | None = None,
        models: Models | None = None,
        timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        self.model = model
        self.repos_root = repos_root
        self.mcp_url = mcp_url
        self.builtin_tools = builtin_tools
        self.runs = runs
        self.cache = cache
        self.metrics = metrics
        self.database = database
        self.models = models
        self.timeout_s = timeout_s
        self.serving = False
        """True between start-up and the beginning of shutdown (as health reports it)."""
        self._began = time.monotonic()
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first reading is meaningless; later ones span calls

    async def snapshot(self, *, probe_models: bool = False) -> pb.GetServerStatusResponse:
        """The status now; the probes run at once, so it takes at most about one timeout.

        Args:
            probe_models: Also ask the model providers that can answer cheaply.
        """
        cache, (mcp, tool_count), resources, database, models = await asyncio.gather(
            self._cache_status(),
            self._mcp_status(),
            self._resources(),
            self._database_status(),
            self._model_statuses(probe_models),
        )
        stats = self.cache.stats
        looked_up = stats.hits + stats.misses
        return pb.GetServerStatusResponse(
            version=VERSION,
            uptime=_duration(time.monotonic() - self._began),
            model=self.model,
            serving=self.serving,
            resources=resources,
            cache=cache,
            cache_hit_ratio=stats.hits / looked_up if looked_up else 0.0,
            mcp=mcp,
            tool_count=tool_count,
            database=database,
            active_runs=self.runs.active,
            max_concurrent_runs=self.runs.slots.maximum,
            requests_by_code=self.metrics.handled_by_code(),
            models=models,
        )

    async def _model_statuses(self, probe: bool) -> list[pb.ModelStatus]:
        if self.models is None:
            return []
        models = self.models
        health = list(models.health.values())
        probes = await asyncio.gather(
            *(self._model_probe(models, h.spec) if probe else _nothing() for h in health)
        )
        return [
            _model_status(h, h.spec == self.model, answer)
            for h, answer in zip(health, probes, strict=True)
        ]

    async def _model_probe(self, models: Models, spec: str) -> pb.DependencyStatus | None:
        probed = await self._probe(lambda: models.probe(spec))
        if probed.value is None and not probed.error:
            return None  # this provider has no cheap question to ask
        latency = probed.value if isinstance(probed.value, float) else probed.seconds
        return _dependency("model", probed, latency)

    async def _cache_status(self) -> pb.DependencyStatus:
        store = self.cache.store
        probed = await self._probe(store.ping)
        latency = probed.value if isinstance(probed.value, float) else probed.seconds
        return _dependency(store.kind, probed, latency)

    async def _database_status(self) -> pb.DependencyStatus:
        if self.database is None:
            return pb.DependencyStatus(configured=False)
        probed = await self._probe(self.database.ping)
        return _dependency(self.database.kind, probed, probed.seconds)

    async def _mcp_status(self) -> tuple[pb.DependencyStatus, int]:
        if self.mcp_url is None:
            return pb.DependencyStatus(kind="mcp", configured=False), self.builtin_tools
        # A client of its own: the agents' shared toolset keeps its connection undisturbed.
        toolset: MCPToolset[None] = MCPToolset(self.mcp_url, init_timeout=self.timeout_s)
        probed = await self._probe(toolset.list_tools)
        if probed.raised is not None:  # its text may quote the URL, token and all
            _log.warning("the MCP server failed its probe: %s", redact_urls(probed.error))
            said = f"the MCP server is unavailable ({type(probed.raised).__name__})"
            probed = replace(probed, error=said)
        tools = probed.value if isinstance(probed.value, list) else []
        return _dependency("mcp", probed, probed.seconds), len(tools)

    async def _resources(self) -> pb.ResourceStatus:
        probed = await self._probe(lambda: asyncio.to_thread(self._read_resources))
        return probed.value if isinstance(probed.value, pb.ResourceStatus) else pb.ResourceStatus()

    def _read_resources(self) -> pb.ResourceStatus:
        disk = psutil.disk_usage(str(self.repos_root))
        return pb.ResourceStatus(
            process_cpu_percent=self._process.cpu_percent(None),
            process_rss_bytes=self._process.memory_info().rss,
            disk_free_bytes=disk.free,
            disk_total_bytes=disk.total,
        )

    async def _probe(self, check: Callable[[], Awaitable[object]]) -> _Probed:
        began = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                value = await check()
        except TimeoutError:
            error = f"no answer within {self.timeout_s:g} s"
            return _Probed(time.perf_counter() - began, error=error)
        except Exception as exc:  # a down dependency is reported, never raised
            return _Probed(time.perf_counter() - began, error=_describe(exc), raised=exc)
        return _Probed(time.perf_counter() - began, value)


async def _nothing() -> None:
    return None


def _model_status(
    health: ModelHealth, is_default: bool, probe: pb.DependencyStatus | None
) -> pb.ModelStatus:
    status = pb.ModelStatus(
        name=health.spec,
        base_url=health.base_url,
        last_failure=health.last_failure_kind,
        is_default=is_default,
        probe=probe,
    )
    if health.last_success is not None:
        status.last_success_time.FromDatetime(_utc(health.last_success))
    if health.last_failure is not None:
        status.last_failure_time.FromDatetime(_utc(health.last_failure))
    return status


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _dependency(kind: str, probed: _Probed, latency_s: float) -> pb.DependencyStatus:
    return pb.DependencyStatus(
        kind=kind,
        configured=True,
        reachable=not probed.error,
        latency=_duration(latency_s),
        error=probed.error,
    )


def _describe(exc: BaseException) -> str:
    """The error in one line; an exception group is described by its first leaf."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(seconds=max(seconds, 0.0)))
    return duration
