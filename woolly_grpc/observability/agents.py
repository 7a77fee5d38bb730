"""Agent metrics, in one place, from the events every run produces (the RunManager's observer)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from woolly_grpc._gen.woolly.v1 import run_pb2
from woolly_grpc.api import agent_type_label
from woolly_grpc.core import (
    AgentType,
    Event,
    StepCompleted,
    StepStarted,
    TextDelta,
    ToolCall,
    UsageMeter,
)

if TYPE_CHECKING:
    from .metrics import Metrics

NO_TENANT = "-"
"""The `tenant` label without authentication (no tenant name starts with `-`)."""

CHAIN_LABEL = "chain"
"""The `agent_type` of a whole chain run in `agent_requests_total` and its duration."""


@dataclass
class _Timing:
    """What the observer remembers about a run in flight."""

    label: str
    began: float
    first_text: dict[int | None, float] = field(default_factory=dict)
    """Time of the first text delta, per chain step (None for a single-agent run)."""
    step_began: dict[int, float] = field(default_factory=dict)


class AgentMetrics:
    """Records the agent metrics from the run events (the RunManager's observer).

    A single-agent run observes TTFT at its first text delta. A chain step observes it when the
    step completes, and only if the model ran: a step answered by the step cache replays its
    text as one delta, which is no model latency.
    """

    def __init__(self, metrics: Metrics, clock: Any = time.perf_counter) -> None:
        self.metrics = metrics
        self.clock = clock
        self._runs: dict[str, _Timing] = {}

    def run_started(self, run: run_pb2.Run) -> None:
        """Count the run as active and remember when it began."""
        self._runs[run.id] = _Timing(_run_label(run), self.clock())
        self.metrics.active_agents.inc()

    def run_event(self, run: run_pb2.Run, event: Event) -> None:
        """TTFT, tool calls, tokens and chain steps, from one event."""
        timing = self._runs.get(run.id)
        if timing is None:
            return
        m = self.metrics
        match event:
            case StepStarted(step=int(step)):
                timing.step_began[step] = self.clock()
            case TextDelta() if event.step not in timing.first_text:
                now = timing.first_text[event.step] = self.clock()
                if event.step is None:
                    m.agent_ttft.labels(_agent_label(event.agent_type)).observe(now - timing.began)
            case ToolCall():
                m.agent_tool_calls.labels(_agent_label(event.agent_type), event.name).inc()
            case StepCompleted(step=int(step)):
                label = _agent_label(event.agent_type)
                cached = event.result.cached
                m.agent_chain_steps.labels(label, "cache" if cached else "model").inc()
                if not cached:
                    if step in timing.first_text:
                        began = timing.step_began.get(step, timing.began)
                        m.agent_ttft.labels(label).observe(timing.first_text[step] - began)

    def run_ended(self, run: run_pb2.Run, meter: UsageMeter) -> None:
        """Count the run by its final status, observe its duration, count its tokens."""
        timing = self._runs.pop(run.id, None)
        if timing is None:
            return
        m = self.metrics
        m.active_agents.dec()
        status = run_pb2.RunStatus.Name(run.status).removeprefix("RUN_STATUS_").lower()
        m.agent_requests.labels(timing.label, status).inc()
        m.agent_duration.labels(timing.label).observe(self.clock() - timing.began)
        for agent_type, usage in meter.by_agent.items():
            m.agent_tokens.labels(agent_type.value, "input").inc(usage.input_tokens)
            m.agent_tokens.labels(agent_type.value, "output").inc(usage.output_tokens)
        total, tenant = meter.total, run.tenant or NO_TENANT
        m.agent_tokens_by_tenant.labels(tenant, "input").inc(total.input_tokens)
        m.agent_tokens_by_tenant.labels(tenant, "output").inc(total.output_tokens)


def _agent_label(agent_type: AgentType | None) -> str:
    return agent_type.value if agent_type is not None else "unknown"


def _run_label(run: run_pb2.Run) -> str:
    if run.method == "ExecuteChain":
        return CHAIN_LABEL
    return agent_type_label(run.agent_types[0]) if run.agent_types else "unknown"
