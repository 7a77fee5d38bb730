"""A typed async client for AgentService: keyword arguments in, generated messages out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any

from google.protobuf import struct_pb2
from grpc import aio

from ._gen.woolly.v1 import agent_pb2, agent_service_pb2, run_pb2
from ._gen.woolly.v1.agent_service_pb2_grpc import AgentServiceStub

AgentTypeLike = str | int
"""An agent type as a name (`simplifier`, `AGENT_TYPE_SIMPLIFIER`) or an enum value."""


def agent_type_value(agent_type: AgentTypeLike) -> agent_pb2.AgentType.ValueType:
    """The AgentType enum value of a name or number."""
    if isinstance(agent_type, int):
        return agent_pb2.AgentType.ValueType(agent_type)
    name = agent_type.upper()
    if not name.startswith("AGENT_TYPE_"):
        name = f"AGENT_TYPE_{name}"
    try:
        return agent_pb2.AgentType.Value(name)
    except ValueError:
        known = ", ".join(n.removeprefix("AGENT_TYPE_").lower() for n in agent_pb2.AgentType.keys())
        raise ValueError(f"unknown agent type {agent_type!r}; known: {known}") from None


def _struct(values: Mapping[str, Any] | None) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    if values:
        struct.update(dict(values))
    return struct


class WoollyClient:
    """Calls a woolly_grpc server over one channel.

    Use it as `async with WoollyClient("localhost:50051") as client: ...`, or pass a channel
    you manage yourself.
    """

    def __init__(self, target: str = "localhost:50051", *, channel: aio.Channel | None = None):
        self._own_channel = channel is None
        self.channel = channel or aio.insecure_channel(target)
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
        agent_type: AgentTypeLike,
        query: str,
        *,
        context: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> agent_service_pb2.ExecuteResponse:
        """Run one agent and return its run id and result."""
        request = agent_service_pb2.ExecuteRequest(
            repository_name=repository,
            agent_type=agent_type_value(agent_type),
            user_query=query,
            context=_struct(context),
        )
        return await self.stub.Execute(request, timeout=timeout)

    async def stream(
        self,
        repository: str,
        agent_type: AgentTypeLike,
        query: str,
        *,
        context: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[agent_service_pb2.StreamExecuteResponse]:
        """Run one agent and yield its events as they happen."""
        request = agent_service_pb2.StreamExecuteRequest(
            repository_name=repository,
            agent_type=agent_type_value(agent_type),
            user_query=query,
            context=_struct(context),
        )
        call = self.stub.StreamExecute(request, timeout=timeout)
        try:
            async for message in call:
                yield message
        finally:
            call.cancel()

    async def chain(
        self,
        repository: str,
        agent_types: Iterable[AgentTypeLike],
        query: str,
        *,
        context: Mapping[str, Any] | None = None,
        parallel: bool = False,
        timeout: float | None = None,
    ) -> AsyncIterator[agent_service_pb2.ExecuteChainResponse]:
        """Run several agents (in order, or at once with `parallel`) and yield every event."""
        request = agent_service_pb2.ExecuteChainRequest(
            repository_name=repository,
            agent_chain=[agent_type_value(t) for t in agent_types],
            user_query=query,
            context=_struct(context),
            mode=agent_pb2.CHAIN_MODE_PARALLEL if parallel else agent_pb2.CHAIN_MODE_SEQUENTIAL,
        )
        call = self.stub.ExecuteChain(request, timeout=timeout)
        try:
            async for message in call:
                yield message
        finally:
            call.cancel()

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

    async def watch_run(
        self, run_id: str, after_sequence: int = 0
    ) -> AsyncIterator[agent_service_pb2.WatchRunResponse]:
        """Replay a run's events after `after_sequence`, then follow it until it ends."""
        request = agent_service_pb2.WatchRunRequest(run_id=run_id, after_sequence=after_sequence)
        call = self.stub.WatchRun(request)
        try:
            async for message in call:
                yield message
        finally:
            call.cancel()
