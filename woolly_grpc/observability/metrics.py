"""Every metric the server exports, on one registry per server.

The gRPC metrics are recorded by `interceptors/metrics.py`, the agent metrics by `agents.py`.
"""

from __future__ import annotations

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.registry import Collector

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
