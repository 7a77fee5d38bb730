"""A real OTLP/gRPC trace receiver on loopback: the collector protocol's `TraceService/Export`.

In tests: `async with running_receiver() as receiver`, then `receiver.spans()`. As a process (the
bench): `python -m tests.support.otlp_receiver` prints its port, then counts spans until killed.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from grpc import aio
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, decoded."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    """Empty for a root span."""
    kind: int
    attributes: dict[str, Any]
    status_code: int
    links: tuple[str, ...]
    """The span ids it links to."""
    resource: dict[str, Any]


class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every export request it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.port = 0

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def raw(self) -> bytes:
        """Everything received, as bytes (to look for text that must not be there)."""
        return b"".join(r.SerializeToString() for r in self.requests)

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far."""
        found: list[ReceivedSpan] = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    found.extend(_decoded(span, resource) for span in scope_spans.spans)
        return found


def _decoded(span: Any, resource: dict[str, Any]) -> ReceivedSpan:
    return ReceivedSpan(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        kind=span.kind,
        attributes={a.key: _value(a.value) for a in span.attributes},
        status_code=span.status.code,
        links=tuple(link.span_id.hex() for link in span.links),
        resource=resource,
    )


class _Counter(TraceReceiver):
    """Counts spans and keeps nothing (the bench sends many)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.count += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@asynccontextmanager
async def running_receiver(receiver: TraceReceiver | None = None) -> AsyncIterator[TraceReceiver]:
    """A receiver on 127.0.0.1 and a free port (`receiver.port`)."""
    receiver = receiver or TraceReceiver()
    server = aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    receiver.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield receiver
    finally:
        await server.stop(None)


async def _serve_counting() -> None:
    async with running_receiver(_Counter()) as receiver:
        print(receiver.port, flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(_serve_counting())
