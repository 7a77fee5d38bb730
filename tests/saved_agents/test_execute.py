"""Running saved agents by id (Execute, StreamExecute, chain steps), on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from grpc import aio
from pydantic_ai.models.function import FunctionModel

from tests.helpers import details, trailers, violations
from tests.saved_agents.helpers import CHAT, RecordingModel, create, definition, update
from tests.support.mcp_server import code_tools_server
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2
from woolly_grpc.api import CACHE_TRAILER
from woolly_grpc.config import Settings
from woolly_grpc.core import AGENT_SPECS, AgentType
from woolly_grpc.testing import RunningServer, running_server

CONVO = agent_pb2.AGENT_TYPE_CONVO_STARTER
TESTER = agent_pb2.AGENT_TYPE_TESTER


@pytest_asyncio.fixture(scope="module")
async def recording() -> RecordingModel:
    return RecordingModel()


@pytest_asyncio.fixture(scope="module")
async def scripted_server(
    agent_settings: Settings, recording: RecordingModel
) -> AsyncIterator[RunningServer]:
    """A server on the module's database whose model is RecordingModel."""
    model = FunctionModel(stream_function=recording.stream)
    async with running_server(agent_settings, model=model) as running:
        yield running


def execute(agent_id: str, query: str = "what is it?", repository: str = "calculator"):
    return agent_service_pb2.ExecuteRequest(
        repository_name=repository, agent_id=agent_id, user_query=query
    )


async def rpc_error(call) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_a_saved_agent_runs_as_its_base_type(agents_server: RunningServer) -> None:
    agent = await create(agents_server, base_type=CHAT)

    response = await agents_server.stub.Execute(execute(agent.id, "where is divide?"), timeout=30)

    assert response.result.agent_id == agent.id
    assert response.result.agent_type == CHAT
    assert "calculator/core.py" in response.result.content


async def test_the_allow_list_restricts_the_tools_called(agents_server: RunningServer) -> None:
    agent = await create(agents_server, base_type=CONVO, tools=["list_files"])
    stream = agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator", agent_id=agent.id, user_query="what to ask?"
    )
    builtin = agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator", agent_type=CONVO, user_query="what to ask?"
    )

    restricted = [m async for m in agents_server.stub.StreamExecute(stream, timeout=30)]
    unrestricted = [m async for m in agents_server.stub.StreamExecute(builtin, timeout=30)]

    called = {m.tool_call.name for m in restricted if m.WhichOneof("event") == "tool_call"}
    assert called == {"list_files"}
    assert restricted[-1].completed.result.agent_id == agent.id
    # The same base type without the allow-list reaches for more tools.
    everything = {m.tool_call.name for m in unrestricted if m.WhichOneof("event") == "tool_call"}
    assert {"repository_info", "search_code"} <= everything


async def test_the_model_is_offered_only_allowed_tools_and_the_prompt(
    scripted_server: RunningServer, recording: RecordingModel
) -> None:
    agent = await create(
        scripted_server, tools=["read_file", "search_code"], system_prompt="Answer like a pirate."
    )

    await scripted_server.stub.Execute(execute(agent.id), timeout=30)

    info = recording.seen[-1]
    assert sorted(tool.name for tool in info.function_tools) == ["read_file", "search_code"]
    assert info.instructions is not None
    assert "Answer like a pirate." in info.instructions
    assert AGENT_SPECS[AgentType.SUMMARIZER].instructions[:60] in info.instructions


async def test_editing_an_agent_changes_the_next_answer_despite_the_cache(
    scripted_server: RunningServer,
) -> None:
    agent = await create(scripted_server, system_prompt="Be brief.")

    async def ask() -> tuple[str, str]:
        call = scripted_server.stub.Execute(execute(agent.id, "cache me"), timeout=30)
        return (await call).result.content, (await trailers(call))[CACHE_TRAILER]

    first, first_outcome = await ask()
    second, second_outcome = await ask()
    await update(scripted_server, agent.id, "system_prompt", system_prompt="Be thorough.")
    third, third_outcome = await ask()
    fourth, fourth_outcome = await ask()

    assert (first_outcome, second_outcome) == ("miss", "hit") and second == first
    assert third_outcome == "miss"
    assert "Be thorough." in third and "Be brief." not in third
    assert (fourth_outcome, fourth) == ("hit", third)


async def test_a_deleted_agent_is_not_served_from_the_cache(agents_server: RunningServer) -> None:
    agent = await create(agents_server)
    await agents_server.stub.Execute(execute(agent.id), timeout=30)

    await agents_server.stub.DeleteAgent(agent_service_pb2.DeleteAgentRequest(id=agent.id))

    error = await rpc_error(agents_server.stub.Execute(execute(agent.id), timeout=30))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_an_inactive_agent_fails_its_precondition(agents_server: RunningServer) -> None:
    agent = await create(agents_server, is_active=False)

    error = await rpc_error(agents_server.stub.Execute(execute(agent.id), timeout=30))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "inactive" in details(error)
    await update(agents_server, agent.id, "is_active", is_active=True)
    response = await agents_server.stub.Execute(execute(agent.id), timeout=30)
    assert response.result.agent_id == agent.id


async def test_an_agent_of_another_repository_is_invalid_here(
    agents_server: RunningServer,
) -> None:
    agent = await create(agents_server, repository="empty_repo")

    error = await rpc_error(agents_server.stub.Execute(execute(agent.id), timeout=30))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "belongs to repository 'empty_repo'" in violations(error)["agent_id"]
    own = await agents_server.stub.Execute(execute(agent.id, repository="empty_repo"), timeout=30)
    assert own.result.agent_id == agent.id


async def test_chain_steps_by_agent_id(agents_server: RunningServer) -> None:
    agent = await create(agents_server, base_type=CONVO, tools=["list_files"])
    request = agent_service_pb2.ExecuteChainRequest(
        repository_name="calculator",
        user_query="review",
        steps=[agent_pb2.ChainStep(agent_id=agent.id), agent_pb2.ChainStep(agent_type=TESTER)],
    )

    messages = [m async for m in agents_server.stub.ExecuteChain(request, timeout=60)]

    started = [m for m in messages if m.WhichOneof("event") == "step_started"]
    assert [(m.step_index, m.step_started.agent_id) for m in started] == [(0, agent.id), (1, "")]
    assert [m.agent_type for m in started] == [CONVO, TESTER]
    first_step_tools = {
        m.tool_call.name
        for m in messages
        if m.WhichOneof("event") == "tool_call" and m.step_index == 0
    }
    assert first_step_tools == {"list_files"}
    results = messages[-1].chain_completed.results
    assert [r.agent_id for r in results] == [agent.id, ""]


@pytest.mark.parametrize(
    ("make_step", "code", "said"),
    [
        (lambda agent: agent.id, grpc.StatusCode.FAILED_PRECONDITION, "inactive"),
        (lambda agent: "no-such-agent", grpc.StatusCode.NOT_FOUND, "no-such-agent"),
    ],
    ids=["inactive", "unknown"],
)
async def test_a_chain_with_a_bad_step_fails_before_running(
    agents_server: RunningServer, make_step, code, said
) -> None:
    inactive = await create(agents_server, is_active=False)
    request = agent_service_pb2.ExecuteChainRequest(
        repository_name="calculator",
        user_query="review",
        steps=[
            agent_pb2.ChainStep(agent_type=TESTER),
            agent_pb2.ChainStep(agent_id=make_step(inactive)),
        ],
    )
    received = []

    with pytest.raises(aio.AioRpcError) as caught:
        async for message in agents_server.stub.ExecuteChain(request, timeout=30):
            received.append(message)

    assert caught.value.code() == code and said in details(caught.value)
    assert received == []


async def test_mcp_tools_are_checked_and_filtered_too(settings: Settings) -> None:
    recording = RecordingModel()
    model = FunctionModel(stream_function=recording.stream)
    async with code_tools_server() as tools:
        with_mcp = settings.model_copy(update={"mcp_url": tools.url})
        async with running_server(with_mcp, model=model) as srv:
            error = await rpc_error(
                srv.stub.CreateAgent(
                    agent_service_pb2.CreateAgentRequest(agent=definition(tools=["read_file"]))
                )
            )
            agent = await create(srv, tools=["find_entities"])
            await srv.stub.Execute(execute(agent.id), timeout=30)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the tools are find_entities, search_code" in violations(error)["agent.tools"]
    assert [tool.name for tool in recording.seen[-1].function_tools] == ["find_entities"]


async def test_an_unreachable_mcp_server_cannot_check_tools(settings: Settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    async with running_server(settings.model_copy(update={"mcp_url": closed_url})) as srv:
        request = agent_service_pb2.CreateAgentRequest(agent=definition(tools=["search_code"]))
        error = await rpc_error(srv.stub.CreateAgent(request, timeout=30))
        without_tools = await create(srv)

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "cannot list the MCP server's tools" in details(error)
    assert without_tools.id, "an agent with every tool needs no list"
