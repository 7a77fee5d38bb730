"""The attributes of our spans, and how a run's span begins and ends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import Attributes

from woolly_grpc._gen.woolly.v1 import run_pb2
from woolly_grpc.api import agent_type_label

if TYPE_CHECKING:
    from opentelemetry.trace import Span

RUN_ID = "woolly.run_id"
"""On every span of a run (copied onto pydantic-ai's by `setup.RunIdStamp`) and on the RPC's."""
TENANT = "woolly.tenant"
CACHE_OUTCOME = "woolly.cache.outcome"
"""`hit`, `miss`, `bypass` or `coalesced`, as in the `woolly-cache` trailer."""
CACHE_HIT = "woolly.cache.hit"
CACHE_AGE = "woolly.cache.age_s"
RUN_JOINED = "woolly.run.joined"
"""True on an RPC that joined an identical run in flight (it links to that run's span)."""

_RUN_STATUS = {
    run_pb2.RUN_STATUS_SUCCEEDED: "succeeded",
    run_pb2.RUN_STATUS_FAILED: "failed",
    run_pb2.RUN_STATUS_CANCELLED: "cancelled",
}


def run_span_attributes(record: run_pb2.Run) -> Attributes:
    """What a run's span says from its start."""
    return {
        RUN_ID: record.id,
        "woolly.run.method": record.method,
        "woolly.repository": record.repository_name,
        "woolly.agent_types": [agent_type_label(t) for t in record.agent_types],
        TENANT: record.tenant,
    }


def end_run_span(span: Span, record: run_pb2.Run) -> None:
    """End a run's span with how the run ended and what its models used."""
    span.set_attribute("woolly.run.status", _RUN_STATUS.get(record.status, "unknown"))
    usage = record.usage
    span.set_attribute("woolly.usage.input_tokens", usage.input_tokens)
    span.set_attribute("woolly.usage.output_tokens", usage.output_tokens)
    span.set_attribute("woolly.usage.requests", usage.requests)
    span.set_attribute("woolly.usage.tool_calls", usage.tool_calls)
    if record.status == run_pb2.RUN_STATUS_CANCELLED:
        reason = run_pb2.CancelReason.Name(record.cancel_reason).removeprefix("CANCEL_REASON_")
        span.set_attribute("woolly.run.cancel_reason", reason.lower())
    elif record.status == run_pb2.RUN_STATUS_FAILED:
        span.set_status(Status(StatusCode.ERROR, record.error.message))
    span.end()
