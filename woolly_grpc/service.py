"""The AgentService servicer: validate, convert, start or read a run, convert back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from google.rpc import code_pb2, status_pb2
from grpc import aio

from . import calls, convert
from ._gen.woolly.v1 import agent_service_pb2 as pb
from ._gen.woolly.v1 import agent_service_pb2_grpc, run_pb2
from .api import RUN_ENDED_TRAILER, RUN_ID_METADATA
from .cache import CachePolicy, ResultCache, StepResultCache
from .core import AgentRunner, ChainRunner, FailedPrecondition, InvalidInput
from .errors import abort, map_core_errors
from .runs import ReplaySlots, RunManager

if TYPE_CHECKING:
    from .saved_agents import SavedAgents
    from .status import StatusReporter

Context: TypeAlias = aio.ServicerContext[Any, Any]
_Streamed = TypeVar(
    "_Streamed", pb.StreamExecuteResponse, pb.ExecuteChainResponse, pb.WatchRunResponse
)
_RunRequest = pb.ExecuteRequest | pb.StreamExecuteRequest | pb.ExecuteChainRequest
_RETRYABLE: dict[str, type[_RunRequest]] = {
    "Execute": pb.ExecuteRequest,
    "StreamExecute": pb.StreamExecuteRequest,
    "ExecuteChain": pb.ExecuteChainRequest,
}


class AgentService(agent_service_pb2_grpc.AgentServiceServicer):
    """One short method per RPC; the work happens in the core and in RunManager.

    The caller's tenant comes from the call's state (`calls`) and is passed on explicitly;
    so is a chain's use of the step cache.

    Args:
        runner: Runs one agent.
        chains: Runs chains of agents.
        runs: Starts, finds and follows runs.
        status: Answers GetServerStatus.
        agents: The saved agents.
        cache: The result cache for chain steps; None when the cache is turned off.
    """

    def __init__(
        self,
        runner: AgentRunner,
        chains: ChainRunner,
        runs: RunManager,
        *,
        status: StatusReporter,
        agents: SavedAgents,
        cache: ResultCache | None,
        replays: ReplaySlots,
    ) -> None:
        self.runner = runner
        self.chains = chains
        self.runs = runs
        self.status = status
        self.agents = agents
        self.cache = cache
        self.replays = replays

    async def ListAgentTypes(
        self, request: pb.ListAgentTypesRequest, context: Context
    ) -> pb.ListAgentTypesResponse:
        return pb.ListAgentTypesResponse(agent_types=convert.agent_type_infos())

    async def Execute(self, request: pb.ExecuteRequest, context: Context) -> pb.ExecuteResponse:
        async with map_core_errors(context):
            run_id = await self._start(request, _deadline(context))
        run = await self._await_end(run_id, context)
        return pb.ExecuteResponse(run_id=run_id, result=run.results[0])

    async def StreamExecute(
        self, request: pb.StreamExecuteRequest, context: Context
    ) -> AsyncIterator[pb.StreamExecuteResponse]:
        async with map_core_errors(context):
            run_id = await self._start(request, _deadline(context))
        async for message in self._relay(run_id, context, pb.StreamExecuteResponse):
            yield message

    async def ExecuteChain(
        self, request: pb.ExecuteChainRequest, context: Context
    ) -> AsyncIterator[pb.ExecuteChainResponse]:
        async with map_core_errors(context):
            run_id = await self._start(request, _deadline(context))
        async for message in self._relay(run_id, context, pb.ExecuteChainResponse):
            yield message

    async def GetRun(self, request: pb.GetRunRequest, context: Context) -> pb.GetRunResponse:
        async with map_core_errors(context):
            return pb.GetRunResponse(run=await self.runs.get(request.run_id, tenant=_tenant()))

    async def CancelRun(
        self, request: pb.CancelRunRequest, context: Context
    ) -> pb.CancelRunResponse:
        async with map_core_errors(context):
            reason = run_pb2.CANCEL_REASON_EXPLICIT
            run = await self.runs.cancel(request.run_id, reason, tenant=_tenant())
            return pb.CancelRunResponse(run=run)

    async def WatchRun(
        self, request: pb.WatchRunRequest, context: Context
    ) -> AsyncIterator[pb.WatchRunResponse]:
        async with map_core_errors(context):
            if request.after_sequence < 0:
                raise InvalidInput.one("after_sequence", "must be 0 or more")
            calls.current().run_id = request.run_id
            await self.runs.get(request.run_id, tenant=_tenant(), text=False)  # the caller may
            self.replays.take()
        try:
            async for message in self._relay(
                request.run_id, context, pb.WatchRunResponse, request.after_sequence
            ):
                yield message
        finally:
            self.replays.give_back()

    async def RetryRun(self, request: pb.RetryRunRequest, context: Context) -> pb.RetryRunResponse:
        async with map_core_errors(context):
            tenant = _tenant()
            if (await self.runs.get(request.run_id, tenant=tenant, text=False)).status == (
                run_pb2.RUN_STATUS_RUNNING
            ):
                raise FailedPrecondition(f"run {request.run_id!r} is still running")
            method, raw = await self.runs.request_of(request.run_id, tenant=tenant)
            # A retry is asked for explicitly: it runs to its end even if nobody watches, and
            # reuses no cached step (it writes its fresh ones, unless the original bypassed).
            run_id = await self._start(_RETRYABLE[method].FromString(raw), None, retry=True)
            return pb.RetryRunResponse(run=await self.runs.get(run_id, tenant=tenant))

    async def GetServerStatus(
        self, request: pb.GetServerStatusRequest, context: Context
    ) -> pb.GetServerStatusResponse:
        return await self.status.snapshot(probe_models=request.probe_models)

    async def CreateAgent(
        self, request: pb.CreateAgentRequest, context: Context
    ) -> pb.CreateAgentResponse:
        async with map_core_errors(context):
            fields = convert.agent_fields(request.agent)
            agent = await self.agents.create(_tenant(), fields, request.request_id)
            return pb.CreateAgentResponse(agent=convert.agent_to_proto(agent))

    async def GetAgent(self, request: pb.GetAgentRequest, context: Context) -> pb.GetAgentResponse:
        async with map_core_errors(context):
            agent = await self.agents.get(_tenant(), request.id)
            return pb.GetAgentResponse(agent=convert.agent_to_proto(agent))

    async def ListAgents(
        self, request: pb.ListAgentsRequest, context: Context
    ) -> pb.ListAgentsResponse:
        async with map_core_errors(context):
            page = await self.agents.list_page(
                _tenant(), request.repository, request.page_size, request.page_token
            )
            return pb.ListAgentsResponse(
                agents=[convert.agent_to_proto(agent) for agent in page.agents],
                next_page_token=page.next_page_token,
            )

    async def UpdateAgent(
        self, request: pb.UpdateAgentRequest, context: Context
    ) -> pb.UpdateAgentResponse:
        async with map_core_errors(context):
            fields = convert.agent_fields(request.agent)
            paths = list(request.update_mask.paths)
            agent = await self.agents.update(_tenant(), request.agent.id, fields, paths)
            return pb.UpdateAgentResponse(agent=convert.agent_to_proto(agent))

    async def DeleteAgent(
        self, request: pb.DeleteAgentRequest, context: Context
    ) -> pb.DeleteAgentResponse:
        async with map_core_errors(context):
            await self.agents.delete(_tenant(), request.id)
            return pb.DeleteAgentResponse()

    async def _start(
        self, request: _RunRequest, deadline: float | None, *, retry: bool = False
    ) -> str:
        """Resolve its saved agents, validate a run request, start its run; return the run id.

        A retried run resolves its saved agents again, so it runs their current definitions.
        `deadline` (the caller's, event-loop time) bounds the run's model retries, unless the
        run is detached: it then outlives its caller's deadline.
        """
        call = calls.current()
        tenant = call.tenant
        detach = retry or request.options.detach
        if detach:
            deadline = None
        saved = await self.agents.for_run(
            tenant, convert.agent_refs(request), request.repository_name
        )
        if isinstance(request, pb.ExecuteChainRequest):
            chain, steps_field = convert.chain_request(request, saved)
            self.chains.check(chain, steps_field)
            steps = self._step_cache(request, tenant, retry)
            run_id, joined = await self.runs.start(
                method="ExecuteChain",
                request=request,
                repository=chain.repository,
                agent_types=[step.agent_type for step in chain.steps],
                events=lambda meter: self.chains.stream(
                    chain, step_cache=steps, meter=meter, deadline=deadline
                ),
                tenant=tenant,
                flight_key=call.cache_key,
                detach=detach,
            )
        else:
            single = convert.run_request(request, saved)
            self.runner.check(single)
            run_id, joined = await self.runs.start(
                method=type(request).__name__.removesuffix("Request"),
                request=request,
                repository=single.repository,
                agent_types=[single.agent_type],
                events=lambda meter: self.runner.stream(single, meter=meter, deadline=deadline),
                tenant=tenant,
                flight_key=call.cache_key,
                detach=detach,
            )
        call.run_id, call.joined = run_id, joined
        return run_id

    def _step_cache(
        self, request: pb.ExecuteChainRequest, tenant: str, retry: bool
    ) -> StepResultCache | None:
        """The chain call's view of the step cache, by its own options (None: cache off)."""
        if self.cache is None:
            return None
        if retry:
            # Its request was accepted once; a maximum lowered since is applied by `put`.
            policy = CachePolicy.of(request.options, self.cache.default_ttl_s).fresh()
        else:
            policy = CachePolicy.of(request.options, self.cache.default_ttl_s, self.cache.max_ttl_s)
        return StepResultCache(self.cache, tenant=tenant, policy=policy)

    async def _relay(
        self, run_id: str, context: Context, response: type[_Streamed], after_sequence: int = 0
    ) -> AsyncIterator[_Streamed]:
        """Stream the run's events to a reader.

        A reader behind the run (its writes waited while events came) gets the text deltas
        that piled up merged into one message, never by waiting for more. The RPC that started
        the run ends with the run's own status; a watcher receives the `failed` / `cancelled`
        event itself and ends OK.
        """
        finished = False
        watching = response is pb.WatchRunResponse
        try:
            await context.send_initial_metadata(((RUN_ID_METADATA, run_id),))
            follow = self.runs.follow(run_id, after_sequence, watching=watching)
            async with map_core_errors(context, run_id), contextlib.aclosing(follow) as batches:
                async for batch in batches:
                    for raw in convert.merge_text_deltas(batch):
                        message = response.FromString(raw)
                        event = message.WhichOneof("event")
                        if event in _LAST_EVENTS:
                            await self.runs.stored(run_id)  # the end, known everywhere first
                        # A failed/cancelled event uses a field reserved in these responses:
                        # the caller learns the outcome from the call's status instead.
                        if event is None:
                            break
                        yield message
            finished = True
        finally:
            # Cancelled, past its deadline, or closed mid-stream (GeneratorExit): let go.
            if not finished:
                self.runs.abandon(run_id, _cancel_reason(context))
        if not watching and (status := self.runs.error_of(run_id)) is not None:
            await _end_with_run(context, status)

    async def _await_end(self, run_id: str, context: Context) -> run_pb2.Run:
        finished = False
        try:
            run = await self.runs.wait(run_id, tenant=_tenant())
            finished = True
        finally:
            if not finished:
                self.runs.abandon(run_id, _cancel_reason(context))
        if (status := self.runs.error_of(run_id)) is not None:
            await _end_with_run(context, status)
        return run


_LAST_EVENTS = frozenset({"completed", "chain_completed", "failed", "cancelled", None})
"""Events that end a run (None: a failed/cancelled one read as a type without those fields)."""


async def _end_with_run(context: Context, status: status_pb2.Status) -> None:
    """End a call with its run's own status, marked so that clients do not resume it."""
    ended = "cancelled" if status.code == code_pb2.CANCELLED else "failed"
    await abort(context, status, ((RUN_ENDED_TRAILER, ended),))


def _deadline(context: Context) -> float | None:
    """The caller's deadline in event-loop time, if it gave one."""
    remaining = context.time_remaining()
    return None if remaining is None else asyncio.get_running_loop().time() + remaining


def _tenant() -> str:
    return calls.current().tenant


def _cancel_reason(context: Context) -> run_pb2.CancelReason.ValueType:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return run_pb2.CANCEL_REASON_DEADLINE
    return run_pb2.CANCEL_REASON_CLIENT
