"""The outermost interceptor: go-grpc-prometheus metrics and one log line for every RPC.

Every method the server has is measured, health and reflection included, in all four
cardinalities, cache hits too (the cache interceptor is inside this one). Messages are counted
where they are (de)serialized, so replayed cache bytes and write()-style streams count alike.
The final code is the real one when the handler aborts, raises, or the caller leaves.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
from prometheus_client import Counter

from woolly_grpc import calls
from woolly_grpc.observability.metrics import GO_CODE_NAMES, Metrics

from ._handlers import (
    PROBE_METHODS,
    Context,
    Handler,
    Next,
    WrappingInterceptor,
    grpc_type,
    wrap_handler,
)

ACCESS_LOGGER = "woolly_grpc.access"
_log = logging.getLogger(ACCESS_LOGGER)


def final_code(context: Context, error: BaseException | None) -> grpc.StatusCode:
    """The status the caller gets: the aborted/set code, else from what the handler raised."""
    if isinstance(error, asyncio.CancelledError):
        # The caller cancelled, its deadline passed, or stop() ran out of grace.
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    code = cast(grpc.StatusCode | None, context.code())  # None unless abort()/set_code() ran
    if code is not None and code != grpc.StatusCode.OK:
        return code
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN


@dataclass
class _Method:
    """The metric children of one method, resolved once (label lookups are not free)."""

    labels: tuple[str, str, str]
    handled_counter: Counter
    started: Any
    received: Any
    sent: Any
    seconds: Any
    quiet: bool
    handled: dict[grpc.StatusCode, Any] = field(default_factory=dict)

    def count_sent(self, _message: object) -> None:
        self.sent.inc()

    def count_received(self, _message: object) -> None:
        self.received.inc()

    def count_handled(self, code: grpc.StatusCode) -> None:
        child = self.handled.get(code)
        if child is None:
            child = self.handled[code] = self.handled_counter.labels(
                *self.labels, GO_CODE_NAMES[code]
            )
        child.inc()


class MetricsInterceptor(WrappingInterceptor):
    """Counts and times every RPC and logs one line for it.

    Every known method is covered; unknown ones (UNIMPLEMENTED from grpc) are not counted: their
    names come from the caller, and labels must stay bounded.
    """

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def wrap(self, method: str, handler: Handler) -> Handler:
        """Time the call, count its messages and its final code."""
        observed = self._method(method, handler)
        return wrap_handler(
            handler,
            functools.partial(self._observe, observed, method),
            on_serialized=observed.count_sent,
            on_deserialized=observed.count_received,
        )

    def _method(self, full_name: str, handler: Handler) -> _Method:
        service, _, name = full_name.lstrip("/").rpartition("/")
        labels = (grpc_type(handler), service, name)
        m = self.metrics
        return _Method(
            labels=labels,
            handled_counter=m.grpc_handled,
            started=m.grpc_started.labels(*labels),
            received=m.grpc_msg_received.labels(*labels),
            sent=m.grpc_msg_sent.labels(*labels),
            seconds=m.grpc_handling_seconds.labels(*labels),
            quiet=full_name.startswith(PROBE_METHODS),  # a kubelet's checks must not flood INFO,
        )

    async def _observe(
        self, method: _Method, full_name: str, request: Any, context: Context, call_next: Next
    ) -> Any:
        method.started.inc()
        began = time.perf_counter()
        error: BaseException | None = None
        try:
            return await call_next(request, context)
        except BaseException as exc:  # AbortError, CancelledError, a servicer's bug: re-raised
            error = exc
            raise
        finally:
            seconds = time.perf_counter() - began
            code = final_code(context, error)
            method.seconds.observe(seconds)
            method.count_handled(code)
            level = logging.DEBUG if method.quiet else logging.INFO
            if _log.isEnabledFor(level):
                _log_call(level, full_name, code, seconds)


_TAIL = ("run_id", "cache", "tenant", "trace_id")
"""The fields the text line shows after the method, code and duration."""


def _log_call(level: int, method: str, code: grpc.StatusCode, seconds: float) -> None:
    """The call's one line: what, how it ended, how long, which run, cache outcome, tenant."""
    fields: dict[str, Any] = {
        "method": method,
        "code": code.name,
        "duration_ms": round(seconds * 1e3, 3),
    }
    if (call := calls.peek()) is not None:
        if call.run_id:
            fields["run_id"] = call.run_id
        if call.cache_outcome is not None:
            fields["cache"] = call.cache_outcome
        if call.tenant:
            fields["tenant"] = call.tenant
        if call.trace_id:
            fields["trace_id"] = call.trace_id
    tail = "".join(f" {k}={v}" for k, v in fields.items() if k in _TAIL)
    message = f"rpc {method} {code.name} {seconds * 1e3:.1f} ms{tail}"
    # makeRecord + handle: `Logger.log` would walk the stack to find a caller nobody prints.
    record = _log.makeRecord(ACCESS_LOGGER, level, __file__, 0, message, (), None)
    record.fields = fields
    _log.handle(record)
