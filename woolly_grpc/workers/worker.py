"""One worker: a whole server (`server.serve`) in its own process, on the supervisor's port.

With the supervisor's /metrics on, prometheus-client runs in multiprocess mode here: counters
and histograms go to files the supervisor sums, `active_agents` counts the live workers' runs.
Collectors that read a value at scrape time (`Metrics.collectors`) cannot be read from another
process, so their values are copied into file-backed metrics every `COPY_EVERY_S`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Literal

from prometheus_client import Counter, Gauge
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from woolly_grpc.config import Settings, StartupError

if TYPE_CHECKING:
    from woolly_grpc.server import App

SERVING, FAILED = "serving", "failed"
"""What a worker tells the supervisor: (SERVING, "") once it takes calls, or (FAILED, why)."""
COPY_EVERY_S = 1.0
"""How often a worker copies its collectors' values for the supervisor's /metrics."""
_FLAGS = frozenset({"cache_store_failing", "database_failing"})
"""Collector gauges that are 1 while something fails: the supervisor reports the largest
(1 when any worker sees it failing); other gauges are summed over the running workers."""


def run(number: int, settings: Settings, supervisor: Connection, shared_metrics: bool) -> None:
    """The worker process's main: serve until SIGTERM or SIGINT (forwarded by the supervisor).

    Args:
        number: This worker's number, 1 to `settings.workers`, written on its log lines.
        settings: The server's settings, with the port the supervisor claimed.
        supervisor: Where to say SERVING, or why start-up failed (the one line it prints).
        shared_metrics: Whether the supervisor serves /metrics from the multiprocess files.
    """
    os.setpgrp()  # a terminal's Ctrl-C reaches the supervisor alone, which forwards it once
    _stop_with(multiprocessing.parent_process())
    # Here, not at the top: the supervisor imports this module and must stay without them.
    from woolly_grpc.observability.logs import configure_logging
    from woolly_grpc.server import serve

    configure_logging(settings, worker=number)
    tasks: list[asyncio.Task[None]] = []

    def serving(app: App) -> None:
        if shared_metrics:
            copy = _copy(app.metrics.collectors)
            tasks.append(asyncio.create_task(copy, name="copy-collectors"))
        supervisor.send((SERVING, ""))

    try:
        asyncio.run(serve(settings, on_serving=serving))
    except StartupError as exc:
        supervisor.send((FAILED, str(exc)))
        sys.exit(2)


def _stop_with(parent: multiprocessing.process.BaseProcess | None) -> None:
    """SIGTERM this worker when the supervisor is gone (SIGKILLed): no worker outlives it."""
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


async def _copy(collectors: Sequence[Collector]) -> None:
    """Copy the collectors' values into file-backed metrics now and then, and a last time."""
    copier = _Copier(collectors)
    try:
        while True:
            copier.copy()
            await asyncio.sleep(COPY_EVERY_S)
    finally:
        copier.copy()  # the counts of the worker's last moments, as it stops


class _Copier:
    """Collector samples → multiprocess metrics of the same names (counters by increments)."""

    def __init__(self, collectors: Sequence[Collector]) -> None:
        self.collectors = collectors
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._counted: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def copy(self) -> None:
        """Bring the file-backed metrics up to the collectors' values now."""
        for collector in self.collectors:
            for family in collector.collect():
                for sample in family.samples:
                    if family.type == "counter" and sample.name.endswith("_total"):
                        self._count(family, sample)
                    elif family.type == "gauge":
                        self._set(family, sample)

    def _count(self, family: Metric, sample: Sample) -> None:
        labels = sample.labels
        if (counter := self._counters.get(family.name)) is None:
            counter = Counter(family.name, family.documentation, sorted(labels), registry=None)
            self._counters[family.name] = counter
        key = (family.name, tuple(sorted(labels.items())))
        increment = sample.value - self._counted.get(key, 0.0)
        self._counted[key] = sample.value
        (counter.labels(**labels) if labels else counter).inc(increment)

    def _set(self, family: Metric, sample: Sample) -> None:
        labels = sample.labels
        if (gauge := self._gauges.get(family.name)) is None:
            mode: Literal["livemax", "livesum"] = "livemax" if family.name in _FLAGS else "livesum"
            gauge = Gauge(
                family.name,
                family.documentation,
                sorted(labels),
                registry=None,
                multiprocess_mode=mode,
            )
            self._gauges[family.name] = gauge
        (gauge.labels(**labels) if labels else gauge).set(sample.value)
