"""OpenTelemetry traces: the provider from `OTEL_*`, and the spans of runs.

Tracing is on when the server is given a tracer provider (`serve` makes one when
`OTEL_EXPORTER_OTLP_ENDPOINT` is set); off, no part of the server holds a tracer, and no span
or tracing call is made on any path. The spans: one per RPC (`interceptors/tracing.py`), one per
run (`runs/manager.py`), one per chain step (`core/chain.py`), and pydantic-ai's own per agent
run, model request and tool call.
"""

from .attributes import (
    CACHE_AGE,
    CACHE_HIT,
    CACHE_OUTCOME,
    RUN_ID,
    RUN_JOINED,
    TENANT,
    end_run_span,
    run_span_attributes,
)
from .setup import Tracing, tracer_provider_from_environment

__all__ = [
    "CACHE_AGE",
    "CACHE_HIT",
    "CACHE_OUTCOME",
    "RUN_ID",
    "RUN_JOINED",
    "TENANT",
    "Tracing",
    "end_run_span",
    "run_span_attributes",
    "tracer_provider_from_environment",
]
