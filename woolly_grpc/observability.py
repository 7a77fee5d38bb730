"""Metrics for /metrics (one registry per server), agent metrics from run events, logging setup.

The gRPC metrics are recorded by `interceptors/metrics.py`; the agent metrics here, in one
place, from the events every run produces (`AgentMetrics` is the RunManager's observer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from threading import Thread
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._gen.woolly.v1 import run_pb2
from .api import agent_type_label
from .core import (
    AgentType,
    Event,
    StepCompleted,
    StepStarted,
    TextDelta,
    ToolCall,
    UsageMeter,
)
from .core.failures import redact_urls

if TYPE_CHECKING:
    from .config import Settings
    from .runs import RunJournal

GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
# fmt: off
RPC_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)
"""From a cache hit (sub-millisecond) to a long agent stream (minutes)."""
AGENT_BUCKETS = (
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)
"""LLM runs: tens of milliseconds (the local engine) to ten minutes (long tool loops)."""
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
"""Time to first token: tens of milliseconds to a minute."""
# fmt: on

GO_CODE_NAMES: dict[grpc.StatusCode, str] = {
    code: "".join(part.title() for part in code.name.split("_")) for code in grpc.StatusCode
} | {grpc.StatusCode.OK: "OK", grpc.StatusCode.CANCELLED: "Canceled"}
"""`grpc_code` label values exactly as go-grpc-prometheus writes them, so its dashboards and
alert rules work unchanged (`InvalidArgument`, `Canceled`, …)."""

NO_TENANT = "-"
"""The `tenant` label without authentication (no tenant name starts with `-`)."""

CHAIN_LABEL = "chain"
"""The `agent_type` of a whole chain run in `agent_requests_total` and its duration."""


class Metrics:
    """Every metric the server exports, registered on `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry or CollectorRegistry()
        self.collectors: list[Collector] = []
        """The collectors of `add_collector`: their values live in this process only (workers
        copy them into prometheus-client's multiprocess files, `workers/worker.py`)."""
        self.cache_hits = Counter(
            "cache_hits",
            "Cacheable calls answered from the result cache.",
            ["agent_type"],
            registry=registry,
        )
        self.cache_misses = Counter(
            "cache_misses",
            "Cacheable calls that ran the agent (coalesced ones included).",
            ["agent_type"],
            registry=registry,
        )
        self.cache_errors = Counter(
            "cache_errors",
            "Cache store operations that failed; the call went on uncached.",
            ["operation"],
            registry=registry,
        )
        self.grpc_started = Counter(
            "grpc_server_started", "RPCs started on the server.", GRPC_LABELS, registry=registry
        )
        self.grpc_handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by final status code.",
            [*GRPC_LABELS, "grpc_code"],
            registry=registry,
        )
        self.grpc_handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC's handler to its final status.",
            GRPC_LABELS,
            buckets=RPC_BUCKETS,
            registry=registry,
        )
        self.grpc_msg_received = Counter(
            "grpc_server_msg_received",
            "Request messages received (one per unary call).",
            GRPC_LABELS,
            registry=registry,
        )
        self.grpc_msg_sent = Counter(
            "grpc_server_msg_sent",
            "Response messages sent (one per successful unary call).",
            GRPC_LABELS,
            registry=registry,
        )
        self.agent_requests = Counter(
            "agent_requests",
            "Runs that ended (cache hits are not runs), by final status.",
            ["agent_type", "status"],
            registry=registry,
        )
        self.agent_duration = Histogram(
            "agent_request_duration_seconds",
            "Run duration, start to end, whatever the outcome.",
            ["agent_type"],
            buckets=AGENT_BUCKETS,
            registry=registry,
        )
        self.active_agents = Gauge(
            "active_agents",
            "Runs executing on this replica now.",
            registry=registry,
            multiprocess_mode="livesum",  # with workers: the running workers' runs together
        )
        self.overload_refusals = Counter(
            "overload_refusals",
            "Calls refused RESOURCE_EXHAUSTED at a limit: new runs (server, tenant), replays.",
            ["limit"],
            registry=registry,
        )
        self.agent_ttft = Histogram(
            "agent_time_to_first_token_seconds",
            "From an agent's start (a run's, or a chain step's) to its first text delta.",
            ["agent_type"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.agent_tokens = Counter(
            "agent_tokens",
            "Model tokens of ended runs, however they ended (cached results excluded).",
            ["agent_type", "direction"],
            registry=registry,
        )
        self.agent_tokens_by_tenant = Counter(
            "agent_tokens_by_tenant",
            "Model tokens of ended runs by the caller's tenant (`-` without authentication).",
            ["tenant", "direction"],
            registry=registry,
        )
        self.agent_model_retries = Counter(
            "agent_model_retries",
            "Model requests retried by the service, by why the attempt before failed.",
            ["reason"],
            registry=registry,
        )
        self.agent_tool_calls = Counter(
            "agent_tool_calls",
            "Tool calls made by agents.",
            ["agent_type", "tool"],
            registry=registry,
        )
        self.agent_chain_steps = Counter(
            "agent_chain_steps",
            "Chain steps finished, by whether the model ran or the step cache answered.",
            ["agent_type", "source"],
            registry=registry,
        )

    def add_collector(self, collector: Collector) -> None:
        """Register a collector read at each scrape, and remember it in `collectors`."""
        self.registry.register(collector)
        self.collectors.append(collector)

    def handled_by_code(self) -> dict[str, int]:
        """RPCs handled since start by status code name (`INVALID_ARGUMENT`), from the counter."""
        by_go_name = {go: code.name for code, go in GO_CODE_NAMES.items()}
        totals: dict[str, int] = {}
        for family in self.grpc_handled.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    name = by_go_name.get(sample.labels["grpc_code"], sample.labels["grpc_code"])
                    totals[name] = totals.get(name, 0) + int(sample.value)
        return totals


@dataclass
class _Timing:
    """What the observer remembers about a run in flight."""

    label: str
    began: float
    first_text: dict[int | None, float] = field(default_factory=dict)
    """Time of the first text delta, per chain step (None for a single-agent run)."""
    step_began: dict[int, float] = field(default_factory=dict)


class RunStoreCollector(Collector):
    """The run journal's own counts, read at each scrape (the journal knows no Prometheus)."""

    def __init__(self, journal: RunJournal) -> None:
        self.journal = journal

    def collect(self) -> Iterator[Metric]:
        """Failed writes, dropped events, lapsed leases so far; runs waiting to be written."""
        journal = self.journal
        yield CounterMetricFamily(
            "run_store_write_failures",
            "Writes of runs to the store that failed (each is retried until the store is back).",
            value=journal.failed_writes,
        )
        yield CounterMetricFamily(
            "run_store_dropped_events",
            "Events of ended runs given up during a store outage longer than "
            "WOOLLY_RUN_OUTAGE_BUFFER_BYTES (their final records are kept).",
            value=journal.dropped_events,
        )
        yield CounterMetricFamily(
            "run_leases_lapsed",
            "Runs of other replicas settled FAILED here because their owner's lease lapsed.",
            value=journal.lapsed_settled,
        )
        yield CounterMetricFamily(
            "run_leases_lost",
            "Runs of this replica that another replica settled (this replica's lease lapsed).",
            value=journal.leases_lost,
        )
        yield GaugeMetricFamily(
            "run_store_backlog_runs",
            "Runs of this replica with changes not yet in the store.",
            value=journal.backlog,
        )


class Dependency(Protocol):
    """A dependency that knows whether its last operation failed, and how often it has."""

    @property
    def failing(self) -> bool:
        """Whether its last operation failed."""


class Database(Dependency, Protocol):
    """The saved-agents database, as its health is reported."""

    failures: int
    """Operations that failed since start."""


class HealthCollector(Collector):
    """Whether the cache store and the saved-agents database answer, read at each scrape.

    Args:
        cache: The result cache (`cache.ResultCache`).
        database: The saved-agents database (`saved_agents.AgentDatabase`).
    """

    def __init__(self, cache: Dependency, database: Database) -> None:
        self.cache = cache
        self.database = database

    def collect(self) -> Iterator[Metric]:
        """Failing flags (the last operation failed) and the database's failures so far."""
        yield GaugeMetricFamily(
            "cache_store_failing",
            "1 while the cache store's last operation failed (calls then run uncached).",
            value=int(self.cache.failing),
        )
        yield GaugeMetricFamily(
            "database_failing",
            "1 while the saved-agents database's last operation failed (saved-agent calls are "
            "UNAVAILABLE).",
            value=int(self.database.failing),
        )
        yield CounterMetricFamily(
            "database_errors",
            "Saved-agents database operations that failed or timed out.",
            value=self.database.failures,
        )


class AgentMetrics:
    """Records the agent metrics from the run events (the RunManager's observer).

    A single-agent run observes TTFT at its first text delta. A chain step observes it when the
    step completes, and only if the model ran: a step answered by the step cache replays its
    text as one delta, which is no model latency.
    """

    def __init__(self, metrics: Metrics, clock: Any = time.perf_counter) -> None:
        self.metrics = metrics
        self.clock = clock
        self._runs: dict[str, _Timing] = {}

    def run_started(self, run: run_pb2.Run) -> None:
        """Count the run as active and remember when it began."""
        self._runs[run.id] = _Timing(_run_label(run), self.clock())
        self.metrics.active_agents.inc()

    def run_event(self, run: run_pb2.Run, event: Event) -> None:
        """TTFT, tool calls, tokens and chain steps, from one event."""
        timing = self._runs.get(run.id)
        if timing is None:
            return
        m = self.metrics
        match event:
            case StepStarted(step=int(step)):
                timing.step_began[step] = self.clock()
            case TextDelta() if event.step not in timing.first_text:
                now = timing.first_text[event.step] = self.clock()
                if event.step is None:
                    m.agent_ttft.labels(_agent_label(event.agent_type)).observe(now - timing.began)
            case ToolCall():
                m.agent_tool_calls.labels(_agent_label(event.agent_type), event.name).inc()
            case StepCompleted(step=int(step)):
                label = _agent_label(event.agent_type)
                cached = event.result.cached
                m.agent_chain_steps.labels(label, "cache" if cached else "model").inc()
                if not cached:
                    if step in timing.first_text:
                        began = timing.step_began.get(step, timing.began)
                        m.agent_ttft.labels(label).observe(timing.first_text[step] - began)

    def run_ended(self, run: run_pb2.Run, meter: UsageMeter) -> None:
        """Count the run by its final status, observe its duration, count its tokens."""
        timing = self._runs.pop(run.id, None)
        if timing is None:
            return
        m = self.metrics
        m.active_agents.dec()
        status = run_pb2.RunStatus.Name(run.status).removeprefix("RUN_STATUS_").lower()
        m.agent_requests.labels(timing.label, status).inc()
        m.agent_duration.labels(timing.label).observe(self.clock() - timing.began)
        for agent_type, usage in meter.by_agent.items():
            m.agent_tokens.labels(agent_type.value, "input").inc(usage.input_tokens)
            m.agent_tokens.labels(agent_type.value, "output").inc(usage.output_tokens)
        total, tenant = meter.total, run.tenant or NO_TENANT
        m.agent_tokens_by_tenant.labels(tenant, "input").inc(total.input_tokens)
        m.agent_tokens_by_tenant.labels(tenant, "output").inc(total.output_tokens)


def _agent_label(agent_type: AgentType | None) -> str:
    return agent_type.value if agent_type is not None else "unknown"


def _run_label(run: run_pb2.Run) -> str:
    if run.method == "ExecuteChain":
        return CHAIN_LABEL
    return agent_type_label(run.agent_types[0]) if run.agent_types else "unknown"


class MetricsEndpoint:
    """prometheus-client's own HTTP server, serving one registry on `/metrics`."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        server, thread = start_http_server(port, host, registry=registry)
        self._server: WSGIServer = server
        self._thread: Thread = thread

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_port)

    async def close(self) -> None:
        """Stop serving (its loop polls every 0.5 s, so this waits in a thread) and unbind."""
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()
        await asyncio.to_thread(self._thread.join, 5.0)


_TEXT_FORMAT = "%(asctime)s %(levelname)s {worker}%(name)s: %(message)s"
_DATA_LOGGERS = (
    *("httpx", "httpx2", "httpcore", "httpcore2", "openai", "mcp", "fastmcp"),
    *("sqlalchemy", "aiosqlite", "asyncpg", "alembic"),
)
"""Libraries whose INFO and DEBUG lines carry data: request URLs (a URL may hold a token),
request bodies (prompts), SQL statements with their parameters (saved system prompts)."""


def quiet_data_loggers() -> None:
    """Keep the libraries that log data to WARNING and above, whatever the log level.

    Called by `server.build` too, so a server embedded under someone else's logging setup
    holds to it as well.
    """
    for name in _DATA_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class RedactingFilter(logging.Filter):
    """Replaces the credentials of any URL in a line (message and traceback) with `***`.

    A last line of defence on the handler: an exception's text may quote a URL with a token.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact `record` in place; never drops it."""
        message = record.getMessage()
        if "://" in message:
            record.msg, record.args = redact_urls(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_urls(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's `fields`."""

    _second = -1
    _stamp = ""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker
        """The worker number this process is (`WOOLLY_WORKERS` > 1), written on every line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        second = int(record.created)
        if second != self._second:  # strftime once a second, not once a line
            self._second, self._stamp = (
                second,
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)),
            )
        entry: dict[str, Any] = {
            "time": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker is not None:
            entry["worker"] = self.worker
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(settings: Settings, *, worker: int | None = None) -> None:
    """Set up the root logger once for the process: level and text or JSON lines on stderr.

    A worker process (`WOOLLY_WORKERS` > 1) gives its number, which every line then carries
    (`worker-2` in text, `"worker": 2` in JSON): the workers share one stderr.
    """
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        tag = "" if worker is None else f"worker-{worker} "
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT.format(worker=tag)))
    handler.addFilter(RedactingFilter())
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    # No format here prints them, and looking them up costs on every record (logging HOWTO).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    quiet_data_loggers()
