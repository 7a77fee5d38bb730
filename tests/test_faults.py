"""Faults of what the server depends on: Redis, the MCP server, the database.

The model provider's faults are tested over its real wire protocol in test_providers.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio
from pydantic_ai.messages import ModelMessage, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from tests.helpers import assert_eventually, details, free_port, read, read_rest, type_value
from tests.support.mcp_server import code_tools_server
from tests.support.postgres_server import running_postgres
from tests.support.redis_server import running_redis
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2, run_pb2
from woolly_grpc.config import Settings
from woolly_grpc.testing import RunningServer, running_server

S = grpc.StatusCode


def execute_request(query: str) -> agent_service_pb2.ExecuteRequest:
    return agent_service_pb2.ExecuteRequest(
        repository_name="calculator", agent_type=type_value("summarizer"), user_query=query
    )


async def test_a_slow_redis_costs_caching_not_calls(settings: Settings) -> None:
    """SIGSTOPped Redis under load: every call answers, uncached; after SIGCONT it caches again."""
    async with running_redis() as redis:
        async with running_server(settings.model_copy(update={"cache_url": redis.url})) as srv:
            await srv.stub.Execute(execute_request("warm"), timeout=30)
            redis.pause()
            try:
                calls = [
                    srv.stub.Execute(execute_request(q), timeout=20)
                    for q in ("warm", *(f"paused {i}" for i in range(6)))
                ]
                responses = await asyncio.gather(*calls)
                outcomes = [dict(await c.trailing_metadata())["woolly-cache"] for c in calls]
            finally:
                redis.resume()

            async def caching_again() -> bool:
                await srv.stub.Execute(execute_request("resumed"), timeout=30)
                call = srv.stub.Execute(execute_request("resumed"), timeout=30)
                await call
                return dict(await call.trailing_metadata())["woolly-cache"] == "hit"

            await assert_eventually(caching_again)

    assert all(r.result.content for r in responses)
    assert outcomes == ["miss"] * 7, "nothing could be read from the paused cache"
    assert srv.app.cache.stats.errors > 0


async def test_a_stopped_database_fails_only_saved_agent_calls(settings: Settings) -> None:
    async with running_postgres() as postgres:
        url = await postgres.create_database()
        async with running_server(settings.model_copy(update={"database_url": url})) as srv:
            agent = agent_pb2.AgentDefinition(name="db-fault", base_type=type_value("summarizer"))
            create = agent_service_pb2.CreateAgentRequest(agent=agent)
            saved = (await srv.stub.CreateAgent(create, timeout=10)).agent
            await postgres.stop()

            failures = {}
            calls: dict[str, Any] = {
                "GetAgent": srv.stub.GetAgent(agent_service_pb2.GetAgentRequest(id=saved.id)),
                "ListAgents": srv.stub.ListAgents(agent_service_pb2.ListAgentsRequest()),
                "CreateAgent": srv.stub.CreateAgent(create),
                "Execute by id": srv.stub.Execute(
                    agent_service_pb2.ExecuteRequest(
                        repository_name="calculator", agent_id=saved.id, user_query="q"
                    )
                ),
            }
            for name, call in calls.items():
                with pytest.raises(aio.AioRpcError) as caught:
                    await asyncio.wait_for(call, 20)
                failures[name] = (caught.value.code(), details(caught.value))
            built_in = await srv.stub.Execute(execute_request("no database needed"), timeout=30)
            types = await srv.stub.ListAgentTypes(agent_service_pb2.ListAgentTypesRequest())
            status = await srv.stub.GetServerStatus(agent_service_pb2.GetServerStatusRequest())

            await postgres.start()  # the same port and data directory

            async def reachable_again() -> bool:
                try:
                    got = await srv.stub.GetAgent(agent_service_pb2.GetAgentRequest(id=saved.id))
                except aio.AioRpcError:
                    return False
                return got.agent.name == "db-fault"

            await assert_eventually(reachable_again, timeout=20)

    for name, (code, message) in failures.items():
        assert code == S.UNAVAILABLE, (name, message)
        assert "database" in message, (name, message)
    assert built_in.result.content and len(types.agent_types) == 6
    assert status.database.configured and not status.database.reachable


class ToolAfterGate:
    """Streams a little, waits for the gate, then calls the MCP server's `search_code`."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def stream(
        self, messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | DeltaToolCalls]:
        if any(isinstance(part, ToolReturnPart) for m in messages for part in m.parts):
            yield "found it."
            return
        yield "looking. "
        await self.gate.wait()
        yield {0: DeltaToolCall(name="search_code", json_args='{"query": "divide"}')}


async def test_an_mcp_server_down_at_start_or_mid_run_is_unavailable_until_back(
    settings: Settings,
) -> None:
    port = free_port()
    model = ToolAfterGate()
    with_mcp = settings.model_copy(update={"mcp_url": f"http://127.0.0.1:{port}/mcp"})
    status_request = agent_service_pb2.GetServerStatusRequest()
    async with running_server(with_mcp, model=FunctionModel(stream_function=model.stream)) as srv:
        model.gate.set()
        down_at_start = await _stream_error(srv, "down at start")
        status_down = await srv.stub.GetServerStatus(status_request, timeout=10)

        async with code_tools_server(port=port) as tools:
            back = [m async for m in srv.stub.StreamExecute(_chat("back"), timeout=30)]
            status_back = await srv.stub.GetServerStatus(status_request, timeout=10)
            model.gate.clear()
            mid_run = srv.stub.StreamExecute(_chat("mid-run"), timeout=30)
            run_id = (await read(mid_run)).run_id
            await read(mid_run)  # "looking. ": the run is in flight, its MCP session open
        model.gate.set()
        with pytest.raises(aio.AioRpcError) as caught:
            await read_rest(mid_run)
        run = (await srv.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=run_id))).run

    assert down_at_start.code() == S.UNAVAILABLE
    assert "MCP server is unreachable" in details(down_at_start)
    assert not status_down.mcp.reachable and status_down.mcp.error
    assert back[-1].completed.result.content == "looking. found it."
    assert ("search_code", {"query": "divide", "directory": "."}) in tools.calls
    assert status_back.mcp.reachable
    assert caught.value.code() == S.UNAVAILABLE
    assert "MCP server failed during the run" in details(caught.value)
    assert run.status == run_pb2.RUN_STATUS_FAILED
    assert run.partial_content.startswith("looking. ")


def _chat(query: str) -> agent_service_pb2.StreamExecuteRequest:
    return agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator", agent_type=type_value("chat_assistant"), user_query=query
    )


async def _stream_error(srv: RunningServer, query: str) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as caught:
        async for _ in srv.stub.StreamExecute(_chat(query), timeout=30):
            pass
    return caught.value


async def test_a_stalled_database_fails_calls_within_its_timeout(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL SIGSTOPped: saved-agent calls end UNAVAILABLE after WOOLLY_DB_TIMEOUT_S
    (not when the database wakes up), naming no address; after SIGCONT they work again. The
    log says it once when the outage begins and once when it ends."""
    caplog.set_level(logging.INFO, logger="woolly_grpc.saved_agents.database")
    async with running_postgres() as postgres:
        url = await postgres.create_database()
        update = {"database_url": url, "db_timeout_s": 1.0}
        async with running_server(settings.model_copy(update=update)) as srv:
            agent = agent_pb2.AgentDefinition(name="stall", base_type=type_value("summarizer"))
            create = agent_service_pb2.CreateAgentRequest(agent=agent)
            saved = (await srv.stub.CreateAgent(create, timeout=10)).agent
            get = agent_service_pb2.GetAgentRequest(id=saved.id)
            postgres.pause()
            try:
                calls = [srv.stub.GetAgent(get, timeout=20) for _ in range(5)]
                outcomes = await asyncio.gather(*calls, return_exceptions=True)
            finally:
                postgres.resume()

            async def answers_again() -> bool:
                try:
                    return (await srv.stub.GetAgent(get, timeout=5)).agent.name == "stall"
                except aio.AioRpcError:
                    return False

            await assert_eventually(answers_again, timeout=20)

    for outcome in outcomes:
        assert isinstance(outcome, aio.AioRpcError), outcome
        assert outcome.code() == S.UNAVAILABLE, details(outcome)
        assert "did not answer within 1 s" in details(outcome)
        assert "127.0.0.1" not in details(outcome) and "postgresql" not in details(outcome)
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if "saved-agent calls are UNAVAILABLE" in m]) == 1, said
    assert len([m for m in said if "answers again" in m]) == 1, said
