"""Run several agents over one repository: in order with context passing, or all at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

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
)


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
    """

    def __init__(self, runner: AgentRunner) -> None:
        self.runner = runner

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
        self, request: ChainRequest, *, step_cache: StepCache | None = None
    ) -> AsyncIterator[Event]:
        """Yield Started, every step's events tagged with its index, then ChainCompleted.

        Args:
            request: The chain.
            step_cache: Where finished steps are looked up and remembered; None = nowhere.
        """
        self.check(request)
        yield Started(model=self.runner.model_name, step_count=len(request.steps))
        results: list[AgentResult | None] = [None] * len(request.steps)
        if request.mode is ChainMode.PARALLEL:
            steps = self._parallel(request, results, step_cache)
        else:
            steps = self._sequential(request, results, step_cache)
        async for event in steps:
            yield event
        final = [r for r in results if r is not None]
        yield ChainCompleted(tuple(final), _context_with_results(request.context, final))

    async def _sequential(
        self, request: ChainRequest, results: list[AgentResult | None], cache: StepCache | None
    ) -> AsyncIterator[Event]:
        for index in range(len(request.steps)):
            earlier = tuple(r for r in results[:index] if r is not None)
            step = _step_request(request, index, earlier)
            async for event in self._step(step, index, results, cache):
                yield event

    async def _parallel(
        self, request: ChainRequest, results: list[AgentResult | None], cache: StepCache | None
    ) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()

        async def run_step(index: int) -> None:
            try:
                step = _step_request(request, index, ())
                async for event in self._step(step, index, results, cache):
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

    async def _step(
        self,
        request: RunRequest,
        index: int,
        results: list[AgentResult | None],
        cache: StepCache | None,
    ) -> AsyncIterator[Event]:
        tag: dict[str, Any] = {"step": index, "agent_type": request.agent_type}
        saved_id = request.saved_agent.id if request.saved_agent else ""
        yield StepStarted(agent_id=saved_id, **tag)
        cached = await cache.get(request) if cache else None
        if cached is not None:
            # Replayed as one delta, so a step's deltas still add up to its content.
            results[index] = cached = replace(cached, cached=True)
            if cached.content:
                yield TextDelta(cached.content, **tag)
            yield StepCompleted(cached, **tag)
            return
        async for event in self.runner.stream(request):
            if isinstance(event, Completed):
                results[index] = event.result
                if cache:
                    await cache.put(request, event.result)
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
