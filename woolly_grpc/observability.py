"""Metrics for /metrics, defined once on a registry of their own (one per server)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class Metrics:
    """Every metric the server exports, registered on `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.cache_hits = Counter(
            "cache_hits",
            "Cacheable calls answered from the result cache.",
            ["agent_type"],
            registry=self.registry,
        )
        self.cache_misses = Counter(
            "cache_misses",
            "Cacheable calls that ran the agent (coalesced ones included).",
            ["agent_type"],
            registry=self.registry,
        )
        self.cache_errors = Counter(
            "cache_errors",
            "Cache store operations that failed; the call went on uncached.",
            ["operation"],
            registry=self.registry,
        )
