"""A typed async client for AgentService: keyword arguments in, generated messages out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar, Unpack

from grpc import aio

from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2, run_pb2
from woolly_grpc._gen.woolly.v1.agent_service_pb2_grpc import AgentServiceStub
from woolly_grpc.api import agent_type_value

from .channel import PathLike, open_channel
from .options import CHANNEL_OPTIONS, RunOptionsArgs, SavedAgent, run_options
from .resume import Event, follow_run, open_stream

__all__ = [
    "AgentTypeLike",
    "Event",
    "RunOptionsArgs",
    "SavedAgent",
    "WoollyClient",
    "agent_type_value",
]

AgentTypeLike = str | int
"""An agent type as a name (`simplifier`, `AGENT_TYPE_SIMPLIFIER`) or an enum value."""


def _agent(agent_type: AgentTypeLike | None, agent_id: str | None) -> dict[str, Any]:
    """The request's `agent` oneof: a built-in type or a saved agent's id, exactly one."""
    if (agent_type is None) == (agent_id is None):
        raise ValueError("give exactly one of agent_type and agent_id")
    if agent_id is not None:
        return {"agent_id": agent_id}
    assert agent_type is not None
    return {"agent_type": agent_type_value(agent_type)}


_Request = TypeVar(
    "_Request",
    agent_service_pb2.ExecuteRequest,
    agent_service_pb2.StreamExecuteRequest,
    agent_service_pb2.ExecuteChainRequest,
)


def _with_context(request: _Request, values: Mapping[str, Any] | None) -> _Request:
    """`request` with its `context`, left out when there is none (as grpcurl does)."""
    if values:
        request.context.update(dict(values))
    return request


class WoollyClient:
    """Calls a woolly_grpc server over one channel.

    Use it as `async with WoollyClient("localhost:50051") as client: ...`, or pass a channel
    you manage yourself. `api_key` is sent as `authorization: Bearer <key>`; `tls` (system CAs)
    or `tls_ca` turn TLS on, `tls_cert` + `tls_key` present a client certificate (mutual TLS).
    """

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        channel: aio.Channel | None = None,
        api_key: str | None = None,
        tls: bool = False,
        tls_ca: PathLike | None = None,
        tls_cert: PathLike | None = None,
        tls_key: PathLike | None = None,
    ):
        self._own_channel = channel is None
        self.channel = channel or open_channel(
            target,
            options=CHANNEL_OPTIONS,
            api_key=api_key,
            tls=tls,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
        self.stub = AgentServiceStub(self.channel)

    async def __aenter__(self) -> WoollyClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel if this client opened it."""
        if self._own_channel:
            await self.channel.close()

    async def agent_types(self) -> list[agent_service_pb2.AgentTypeInfo]:
        """Every built-in agent type with what it does."""
        response = await self.stub.ListAgentTypes(agent_service_pb2.ListAgentTypesRequest())
        return list(response.agent_types)

    async def execute(
        self,
        repository: str,
        agent_type: AgentTypeLike | None = None,
        query: str = "",
        *,
        agent_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        **options: Unpack[RunOptionsArgs],
    ) -> agent_service_pb2.ExecuteResponse:
        """Run one agent (a built-in `agent_type` or a saved `agent_id`); its run id and result.

        Not retried on UNAVAILABLE: the run may have started (see `client.options`).
        """
        request = agent_service_pb2.ExecuteRequest(
            repository_name=repository,
            user_query=query,
            options=run_options(**options),
            **_agent(agent_type, agent_id),
        )
        return await self.stub.Execute(_with_context(request, context), timeout=timeout)

    def stream(
        self,
        repository: str,
        agent_type: AgentTypeLike | None = None,
        query: str = "",
        *,
        agent_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        **options: Unpack[RunOptionsArgs],
    ) -> AsyncIterator[Event]:
        """Run one agent and yield its events as they happen, each exactly once.

        A dropped connection (UNAVAILABLE) is resumed with WatchRun after the last event seen,
        without rerunning the agent. Events are `WatchRunResponse`s (the StreamExecute messages
        read as their wire-compatible superset).
        """
        request = agent_service_pb2.StreamExecuteRequest(
            repository_name=repository,
            user_query=query,
            options=run_options(**options),
            **_agent(agent_type, agent_id),
        )
        return self._follow("StreamExecute", _with_context(request, context), timeout)

    def chain(
        self,
        repository: str,
        agent_types: Iterable[AgentTypeLike | SavedAgent],
        query: str,
        *,
        context: Mapping[str, Any] | None = None,
        parallel: bool = False,
        timeout: float | None = None,
        **options: Unpack[RunOptionsArgs],
    ) -> AsyncIterator[Event]:
        """Run several agents (in order, or at once with `parallel`) and yield every event once.

        Steps are built-in types or `SavedAgent(id)`s; resumes a dropped stream like `stream`.
        """
        agents = list(agent_types)
        request = agent_service_pb2.ExecuteChainRequest(
            repository_name=repository,
            user_query=query,
            options=run_options(**options),
            mode=agent_pb2.CHAIN_MODE_PARALLEL if parallel else agent_pb2.CHAIN_MODE_SEQUENTIAL,
        )
        _with_context(request, context)
        if any(isinstance(a, SavedAgent) for a in agents):
            request.steps.extend(
                agent_pb2.ChainStep(agent_id=a.id)
                if isinstance(a, SavedAgent)
                else agent_pb2.ChainStep(agent_type=agent_type_value(a))
                for a in agents
            )
        else:
            request.agent_chain.extend(
                agent_type_value(a) for a in agents if not isinstance(a, SavedAgent)
            )
        return self._follow("ExecuteChain", request, timeout)

    def _follow(self, method: str, request: Any, timeout: float | None) -> AsyncIterator[Event]:
        """A run's stream that resumes with WatchRun when the link drops, within `timeout`."""
        return follow_run(
            lambda: open_stream(self.channel, method, request, timeout=timeout),
            self._watch,
            self.channel.channel_ready,
            timeout=timeout,
        )

    async def get_run(self, run_id: str) -> run_pb2.Run:
        """A run's status and, once done, its results."""
        response = await self.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=run_id))
        return response.run

    async def cancel_run(self, run_id: str) -> run_pb2.Run:
        """Stop a run; returns it as it ended."""
        response = await self.stub.CancelRun(agent_service_pb2.CancelRunRequest(run_id=run_id))
        return response.run

    async def retry_run(self, run_id: str) -> run_pb2.Run:
        """Start a new run with a finished run's request."""
        response = await self.stub.RetryRun(agent_service_pb2.RetryRunRequest(run_id=run_id))
        return response.run

    async def server_status(
        self, *, probe_models: bool = False, timeout: float | None = 10.0
    ) -> agent_service_pb2.GetServerStatusResponse:
        """The server's version, uptime, resources, dependencies, models, runs, calls by code.

        `probe_models` also asks each model's provider (a request each, where one is cheap).
        """
        request = agent_service_pb2.GetServerStatusRequest(probe_models=probe_models)
        return await self.stub.GetServerStatus(request, timeout=timeout)

    def watch_run(
        self, run_id: str, after_sequence: int = 0, *, timeout: float | None = None
    ) -> AsyncIterator[Event]:
        """Replay a run's events after `after_sequence`, then follow it until it ends.

        A run that failed or was cancelled raises its status (like `stream`), after its events;
        a dropped connection is resumed.
        """
        request = agent_service_pb2.WatchRunRequest(run_id=run_id, after_sequence=after_sequence)
        return follow_run(
            lambda: self.stub.WatchRun(request, timeout=timeout),  # a server that is down: fail
            self._watch,
            self.channel.channel_ready,
            run_id=run_id,
            after=after_sequence,
            timeout=timeout,
        )

    def _watch(
        self, run_id: str, after: int, timeout: float | None
    ) -> aio.UnaryStreamCall[Any, Event]:
        """A resume: it waits for the server it just lost to be back."""
        request = agent_service_pb2.WatchRunRequest(run_id=run_id, after_sequence=after)
        return self.stub.WatchRun(request, timeout=timeout, wait_for_ready=True)

    async def create_agent(
        self,
        name: str,
        base_type: AgentTypeLike,
        *,
        description: str = "",
        system_prompt: str = "",
        tools: Iterable[str] = (),
        repository: str = "",
        active: bool = True,
        model: str = "",
        temperature: float | None = None,
        max_output_tokens: int | None = None,
        request_id: str = "",
        timeout: float | None = 10.0,
    ) -> agent_pb2.AgentDefinition:
        """Save a new agent: a base type with its own prompt and tool allow-list (empty = all).

        `model` is one of the server's models (empty: the server's own); `temperature` and
        `max_output_tokens` tune it (None: the model's defaults). Give a `request_id` (a UUID)
        and repeat it when you retry: a create that did happen then answers with its agent.
        """
        agent = agent_pb2.AgentDefinition(
            name=name,
            base_type=agent_type_value(base_type),
            description=description,
            system_prompt=system_prompt,
            tools=list(tools),
            repository=repository,
            is_active=active,
            model=model,
            temperature=temperature,
            max_output_tokens=max_output_tokens,
        )
        request = agent_service_pb2.CreateAgentRequest(agent=agent, request_id=request_id)
        return (await self.stub.CreateAgent(request, timeout=timeout)).agent

    async def get_agent(
        self, agent_id: str, *, timeout: float | None = 10.0
    ) -> agent_pb2.AgentDefinition:
        """One saved agent."""
        request = agent_service_pb2.GetAgentRequest(id=agent_id)
        return (await self.stub.GetAgent(request, timeout=timeout)).agent

    async def list_agents(
        self, repository: str = "", *, page_size: int = 0, timeout: float | None = 10.0
    ) -> AsyncIterator[agent_pb2.AgentDefinition]:
        """Every saved agent (of `repository` and unscoped ones, if given), oldest first."""
        token = ""
        while True:
            request = agent_service_pb2.ListAgentsRequest(
                repository=repository, page_size=page_size, page_token=token
            )
            response = await self.stub.ListAgents(request, timeout=timeout)
            for agent in response.agents:
                yield agent
            if not (token := response.next_page_token):
                return

    async def update_agent(
        self,
        agent_id: str,
        *,
        name: str | None = None,
        base_type: AgentTypeLike | None = None,
        description: str | None = None,
        system_prompt: str | None = None,
        tools: Iterable[str] | None = None,
        repository: str | None = None,
        active: bool | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
        timeout: float | None = 10.0,
    ) -> agent_pb2.AgentDefinition:
        """Change the fields given (and only those); the agent's revision grows by one.

        Raises:
            ValueError: when no field is given (an empty update mask would replace them all).
        """
        changes: dict[str, Any] = {
            "name": name,
            "base_type": None if base_type is None else agent_type_value(base_type),
            "description": description,
            "system_prompt": system_prompt,
            "tools": None if tools is None else list(tools),
            "repository": repository,
            "is_active": active,
            "model": model,
            "temperature": temperature,
            "max_output_tokens": max_output_tokens,
        }
        paths = [path for path, value in changes.items() if value is not None]
        if not paths:
            raise ValueError("give at least one field to change")
        agent = agent_pb2.AgentDefinition(id=agent_id, **{p: changes[p] for p in paths})
        request = agent_service_pb2.UpdateAgentRequest(agent=agent)
        request.update_mask.paths.extend(paths)
        return (await self.stub.UpdateAgent(request, timeout=timeout)).agent

    async def delete_agent(self, agent_id: str, *, timeout: float | None = 10.0) -> None:
        """Delete a saved agent."""
        request = agent_service_pb2.DeleteAgentRequest(id=agent_id)
        await self.stub.DeleteAgent(request, timeout=timeout)
