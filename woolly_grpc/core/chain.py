"""Run several agents over one repository: in order with context passing, or all at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from opentelemetry.trace import Tracer

from .exceptions import InvalidInput
from .runner import AgentRunner
from .types import (
    AgentResult,
    ChainCompleted,
    ChainMode,
    ChainRequest,
    Completed,
    Event,
    RunRequest,
    Started,
    StepCompleted,
    StepStarted,
    TextDelta,
    UsageMeter,
)

STEP_INDEX = "woolly.chain.step"
STEP_AGENT_TYPE = "woolly.agent_type"
STEP_SAVED_AGENT = "woolly.saved_agent_id"
STEP_CACHED = "woolly.chain.step.cached"
"""True when the step cache answered the step (no model ran)."""


class StepCache(Protocol):
    """Remembers chain steps' results, so a chain re-run replays the steps it already finished.

    The key is the implementation's business: it must cover everything the step saw
    (repository, agent, query, context, earlier results) and the model.
    """

    async def get(self, request: RunRequest) -> AgentResult | None:
        """The result of an identical step, or None."""

    async def put(self, request: RunRequest, result: AgentResult) -> None:
        """Remember a finished step's result."""


class ChainRunner:
    """Runs several agents over one repository, sequentially or in parallel.

    Args:
        runner: Runs each step.
        tracer: Where each step's span goes (`chain step N`, around its agent's spans); None
            when tracing is off.
    """

    def __init__(self, runner: AgentRunner, *, tracer: Tracer | None = None) -> None:
        self.runner = runner
        self.tracer = tracer

    def check(self, request: ChainRequest, steps_field: str = "agent_chain") -> None:
        """Validate a chain request; `steps_field` names the request field listing the steps."""
        limit = self.runner.limits.max_chain_steps
        if not request.steps:
            raise InvalidInput.one(steps_field, "must name at least one agent")
        if len(request.steps) > limit:
            raise InvalidInput.one(
                steps_field, f"has {len(request.steps)} agents; the limit is {limit}"
            )
        self.runner.check(_step_request(request, 0, ()))

    async def stream(
        self,
        request: ChainRequest,
        *,
        step_cache: StepCache | None = None,
        meter: UsageMeter | None = None,
        deadline: float | None = None,
    ) -> AsyncGenerator[Event]:
        """Yield Started, every step's events tagged with its index, then ChainCompleted.

        Args:
            request: The chain.
            step_cache: Where finished steps are looked up and remembered; None = nowhere.
            meter: Told what each step's model used, however the step ended.
            deadline: The caller's deadline (event-loop time), for model retries.
        """
        self.check(request)
        yield Started(model=self.runner.model_name, step_count=len(request.steps))
        results: list[AgentResult | None] = [None] * len(request.steps)
        step = _Step(self.runner, results, step_cache, meter, deadline, self.tracer)
        if request.mode is ChainMode.PARALLEL:
            steps = self._parallel(request, step)
        else:
            steps = self._sequential(request, step)
        async for event in steps:
            yield event
        final = [r for r in results if r is not None]
        yield ChainCompleted(tuple(final), _context_with_results(request.context, final))

    async def _sequential(self, request: ChainRequest, step: _Step) -> AsyncIterator[Event]:
        for index in range(len(request.steps)):
            earlier = tuple(r for r in step.results[:index] if r is not None)
            async for event in step.run(_step_request(request, index, earlier), index):
                yield event

    async def _parallel(self, request: ChainRequest, step: _Step) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()

        async def run_step(index: int) -> None:
            try:
                async for event in step.run(_step_request(request, index, ()), index):
                    queue.put_nowait(event)
                queue.put_nowait(None)
            except Exception as exc:
                queue.put_nowait(exc)

        tasks = [asyncio.create_task(run_step(i)) for i in range(len(request.steps))]
        try:
            running = len(tasks)
            while running:
                item = await queue.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class _Step:
    """What one chain call's steps share: its runner, results so far, step cache and meter."""

    runner: AgentRunner
    results: list[AgentResult | None]
    cache: StepCache | None
    meter: UsageMeter | None
    deadline: float | None
    tracer: Tracer | None

    async def run(self, request: RunRequest, index: int) -> AsyncGenerator[Event]:
        """One step's events, in the step's span when tracing."""
        if self.tracer is None:
            async for event in self._run(request, index):
                yield event
            return
        attributes = {
            STEP_INDEX: index,
            STEP_AGENT_TYPE: request.agent_type.value,
            STEP_SAVED_AGENT: request.saved_agent.id if request.saved_agent else "",
        }
        # Current while the step runs (in the run's task, or the step's own when parallel),
        # so the agent's spans are the step's children.
        with self.tracer.start_as_current_span(
            f"chain step {index} {request.agent_type.value}",
            attributes=attributes,
            record_exception=False,  # a traceback is the log's; the status says what failed
        ) as span:
            async for event in self._run(request, index):
                if isinstance(event, StepCompleted):
                    span.set_attribute(STEP_CACHED, event.result.cached)
                yield event

    async def _run(self, request: RunRequest, index: int) -> AsyncGenerator[Event]:
        """One step's events, tagged with its index; from the step cache when it has them."""
        tag: dict[str, Any] = {"step": index, "agent_type": request.agent_type}
        saved_id = request.saved_agent.id if request.saved_agent else ""
        yield StepStarted(agent_id=saved_id, **tag)
        cached = await self.cache.get(request) if self.cache else None
        if cached is not None:
            # Replayed as one delta, so a step's deltas still add up to its content.
            self.results[index] = cached = replace(cached, cached=True)
            if cached.content:
                yield TextDelta(cached.content, **tag)
            yield StepCompleted(cached, **tag)
            return
        events = self.runner.stream(request, meter=self.meter, deadline=self.deadline)
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, Completed):
                    self.results[index] = event.result
                    if self.cache:
                        await self.cache.put(request, event.result)
                    yield StepCompleted(event.result, **tag)
                elif not isinstance(event, Started):
                    yield replace(event, **tag)


def _step_request(chain: ChainRequest, index: int, earlier: tuple[AgentResult, ...]) -> RunRequest:
    step = chain.steps[index]
    return RunRequest(
        repository=chain.repository,
        agent_type=step.agent_type,
        query=chain.query,
        context=_context_with_results(chain.context, earlier),
        saved_agent=step.saved_agent,
        earlier_results=earlier,
    )


def _context_with_results(
    context: Mapping[str, Any], results: Sequence[AgentResult]
) -> dict[str, Any]:
    merged = dict(context)
    for i, result in enumerate(results):
        merged[f"agent_{i}_result"] = result.content
        merged[f"agent_{i}_type"] = result.agent_type.value
    return merged
