"""One span per RPC, continuing the caller's trace (`traceparent` metadata).

Only installed when tracing is on. Health and reflection are not traced: probes every few
seconds would bury the calls that matter. The span is current while the call runs, so the run
it starts becomes its child; when the call ends, the span gets what the call's state says
(`calls.Call`): the run id, the cache outcome, a join onto a run in flight, the tenant.
"""

from __future__ import annotations

import functools
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from woolly_grpc import calls
from woolly_grpc._gen.woolly.v1 import agent_service_pb2
from woolly_grpc.tracing import CACHE_AGE, CACHE_HIT, CACHE_OUTCOME, RUN_ID, RUN_JOINED, TENANT

from ._handlers import PROBE_METHODS, Context, Handler, Next, WrappingInterceptor, wrap_handler
from .metrics import final_code

_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""The codes the OpenTelemetry RPC conventions count as a server span's error."""


class TracingInterceptor(WrappingInterceptor):
    """Starts a server span for every call but probes."""

    def __init__(self, tracer: trace.Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def covers(self, method: str, handler: Handler) -> bool:
        """Every method but health checks and reflection."""
        return not method.startswith(PROBE_METHODS)

    def wrap(self, method: str, handler: Handler) -> Handler:
        """Run the call inside its span."""
        name = method.lstrip("/")
        service, _, rpc = name.rpartition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}
        replayed = (
            agent_service_pb2.WatchRunResponse
            if handler.response_streaming
            else agent_service_pb2.ExecuteResponse
        )
        return wrap_handler(handler, functools.partial(self._trace, name, attributes, replayed))

    async def _trace(
        self,
        name: str,
        attributes: dict[str, str],
        replayed: type[agent_service_pb2.WatchRunResponse | agent_service_pb2.ExecuteResponse],
        request: Any,
        context: Context,
        call_next: Next,
    ) -> Any:
        # Binary (`-bin`) metadata is bytes and never a propagation header.
        carrier = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        call = calls.current()
        with self.tracer.start_as_current_span(
            name,
            context=propagate.extract(carrier),
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,  # a servicer's bug is logged with its traceback already
            set_status_on_exception=False,
        ) as span:
            call.trace_id = trace.format_trace_id(span.get_span_context().trace_id)
            error: BaseException | None = None
            try:
                return await call_next(request, context)
            except BaseException as exc:  # AbortError, CancelledError…: re-raised
                error = exc
                raise
            finally:
                _describe(span, final_code(context, error), call, replayed)


def _describe(
    span: trace.Span,
    code: grpc.StatusCode,
    call: calls.Call,
    replayed: type[agent_service_pb2.WatchRunResponse | agent_service_pb2.ExecuteResponse],
) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, code.name))
    run_id = call.run_id
    if call.cache_outcome is not None:
        span.set_attribute(CACHE_OUTCOME, call.cache_outcome)
        span.set_attribute(CACHE_HIT, call.cache_outcome == "hit")
        if call.replayed is not None:  # a hit: the run that produced the answer
            run_id = replayed.FromString(call.replayed).run_id
            span.set_attribute(CACHE_AGE, call.cache_age_s)
    if run_id:
        span.set_attribute(RUN_ID, run_id)
    if call.joined:
        span.set_attribute(RUN_JOINED, True)
    if call.tenant:
        span.set_attribute(TENANT, call.tenant)
