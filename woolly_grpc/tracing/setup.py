"""The tracer provider: from the standard `OTEL_*` variables, or given (tests make one per server).

The provider is passed explicitly, never set as OpenTelemetry's global: the global can be set
once per process, and tests run several servers, each with its own. pydantic-ai is given the
same provider through `InstrumentationSettings`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from pydantic_ai.models.instrumented import InstrumentationSettings

from woolly_grpc.api import VERSION

from .attributes import RUN_ID

DEFAULT_SERVICE_NAME = "woolly-grpc"
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def tracer_provider_from_environment(
    environ: Mapping[str, str] = os.environ,
) -> TracerProvider | None:
    """A provider exporting over OTLP/gRPC in batches, or None when no endpoint is set.

    These are OpenTelemetry's own variables, read by its SDK as everywhere else (endpoint,
    headers, TLS, timeout, compression, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
    `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`); only whether one is set is decided here.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if not any(environ.get(name, "").strip() for name in _ENDPOINTS):
        return None
    # Imported here: without an endpoint, the exporter's modules are never loaded.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


class RunIdStamp(SpanProcessor):
    """Gives every span started under a span with a run id that run id too.

    pydantic-ai's spans (agent run, model requests, tool calls) are then found by run id like
    ours, though pydantic-ai knows nothing of runs.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Copy the parent's run id, if it has one."""
        parent = trace.get_current_span(parent_context)
        attributes = getattr(parent, "attributes", None)  # only SDK spans have them
        if attributes and RUN_ID not in (span.attributes or {}):
            run_id = attributes.get(RUN_ID)
            if run_id is not None:
                span.set_attribute(RUN_ID, run_id)

    def on_end(self, span: ReadableSpan) -> None:
        """Nothing to do at the end."""


@dataclass(frozen=True)
class Tracing:
    """The tracing of one server: its provider, our tracer, pydantic-ai's settings."""

    provider: TracerProvider
    tracer: trace.Tracer
    instrumentation: InstrumentationSettings
    """For pydantic-ai's agents: the same provider, content only if asked for."""

    @classmethod
    def over(cls, provider: TracerProvider, *, include_content: bool) -> Tracing:
        """Trace with `provider` (the server owns it from now: `close` shuts it down)."""
        provider.add_span_processor(RunIdStamp())
        instrumentation = InstrumentationSettings(
            tracer_provider=provider,
            # pydantic-ai's GenAI metrics would go to OpenTelemetry's global meter; ours are
            # on /metrics already.
            meter_provider=NoOpMeterProvider(),
            include_content=include_content,
            include_binary_content=include_content,
        )
        return cls(provider, provider.get_tracer("woolly_grpc", VERSION), instrumentation)

    async def close(self) -> None:
        """Export what is still buffered and stop (in a thread: exporting blocks)."""
        await asyncio.to_thread(self.provider.shutdown)
