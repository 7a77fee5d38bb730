"""Collectors: values read at each scrape from parts that know no Prometheus.

The run journal's counts, and whether the cache store and the saved-agents database answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from woolly_grpc.runs import RunJournal


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
            value=journal.writer.failed_writes,
        )
        yield CounterMetricFamily(
            "run_store_dropped_events",
            "Events of ended runs given up during a store outage longer than "
            "WOOLLY_RUN_OUTAGE_BUFFER_BYTES (their final records are kept).",
            value=journal.writer.dropped_events,
        )
        yield CounterMetricFamily(
            "run_leases_lapsed",
            "Runs of other replicas settled FAILED here because their owner's lease lapsed.",
            value=journal.leases.lapsed_settled,
        )
        yield CounterMetricFamily(
            "run_leases_lost",
            "Runs of this replica that another replica settled (this replica's lease lapsed).",
            value=journal.writer.leases_lost,
        )
        yield GaugeMetricFamily(
            "run_store_backlog_runs",
            "Runs of this replica with changes not yet in the store.",
            value=journal.writer.backlog,
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
