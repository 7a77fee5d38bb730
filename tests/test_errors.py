"""Bad input gets a clear status with BadRequest field details; unknown things are NOT_FOUND."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc import aio

from tests.helpers import details, type_value, violations
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2
from woolly_grpc.testing import RunningServer

SUMMARIZER = agent_pb2.AGENT_TYPE_SUMMARIZER


def execute(**fields):
    fields.setdefault("repository_name", "calculator")
    fields.setdefault("user_query", "what does it do?")
    if "agent_type" not in fields and "agent_id" not in fields:
        fields["agent_type"] = type_value("summarizer")
    return agent_service_pb2.ExecuteRequest(**fields)


async def rpc_error(call) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as caught:
        await call
    return caught.value


BAD_EXECUTE: dict[str, tuple[dict[str, Any], str]] = {
    "unspecified agent type": (dict(agent_type=0), "agent_type"),
    "unknown agent type": (dict(agent_type=99), "agent_type"),
    "empty query": (dict(user_query=""), "user_query"),
    "blank query": (dict(user_query=" \n\t "), "user_query"),
    "oversized query": (dict(user_query="x" * 100_001), "user_query"),
    "parent escape": (dict(repository_name="../calculator"), "repository_name"),
    "nested path": (dict(repository_name="calculator/calculator"), "repository_name"),
    "absolute path": (dict(repository_name="/etc"), "repository_name"),
    "empty repository": (dict(repository_name=""), "repository_name"),
    "NUL in repository": (dict(repository_name="calc\x00ulator"), "repository_name"),
}


@pytest.mark.parametrize("case", BAD_EXECUTE)
async def test_bad_execute_input(server: RunningServer, case: str) -> None:
    fields, field = BAD_EXECUTE[case]

    error = await rpc_error(server.stub.Execute(execute(**fields), timeout=10))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, details(error)
    assert field in violations(error)
    assert details(error)


async def test_bad_stream_input_fails_before_any_event(server: RunningServer) -> None:
    request = agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator", agent_type=type_value("unspecified"), user_query=""
    )
    received = []
    with pytest.raises(aio.AioRpcError) as caught:
        async for message in server.stub.StreamExecute(request, timeout=10):
            received.append(message)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert received == []
    assert set(violations(caught.value)) == {"agent_type"}


async def test_several_bad_fields_are_all_named(server: RunningServer) -> None:
    request = execute(user_query="", context=None)
    request.context.update({"blob": "y" * 300_000})

    error = await rpc_error(server.stub.Execute(request, timeout=10))

    assert set(violations(error)) == {"user_query", "context"}


async def test_a_query_far_over_its_limit_gets_a_clear_answer(server: RunningServer) -> None:
    """A 1 MiB query is ten times its field's limit but under the 2 MiB message bound, so the
    field limit answers (the message bound leaves room for exactly this)."""
    error = await rpc_error(server.stub.Execute(execute(user_query="q" * (1 << 20)), timeout=20))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit is 100,000" in violations(error)["user_query"]


async def test_unknown_repository_is_not_found(server: RunningServer) -> None:
    error = await rpc_error(server.stub.Execute(execute(repository_name="nope"), timeout=10))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in details(error)


@pytest.mark.parametrize(
    ("chain", "field"),
    [
        (dict(agent_chain=[]), "agent_chain"),
        (dict(agent_chain=[4] * 11), "agent_chain"),
        (dict(agent_chain=[4, 0]), "agent_chain[1]"),
        (dict(agent_chain=[4], steps=[agent_pb2.ChainStep(agent_type=SUMMARIZER)]), "steps"),
        (dict(steps=[agent_pb2.ChainStep()]), "steps[0].agent_type"),
    ],
)
async def test_bad_chain(server: RunningServer, chain, field) -> None:
    request = agent_service_pb2.ExecuteChainRequest(
        repository_name="calculator", user_query="q", **chain
    )

    with pytest.raises(aio.AioRpcError) as caught:
        async for _ in server.stub.ExecuteChain(request, timeout=10):
            pass

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(caught.value)


async def test_unknown_run_is_not_found(server: RunningServer) -> None:
    error = await rpc_error(server.stub.GetRun(agent_service_pb2.GetRunRequest(run_id="nope")))

    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_unknown_saved_agent_is_not_found(server: RunningServer) -> None:
    error = await rpc_error(server.stub.Execute(execute(agent_id="abc"), timeout=10))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "agent 'abc' not found" in details(error)


async def test_empty_saved_agent_id_is_invalid(server: RunningServer) -> None:
    error = await rpc_error(server.stub.Execute(execute(agent_id=""), timeout=10))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "agent_id" in violations(error)


UNKNOWN_AGENT = [
    ("GetAgent", agent_service_pb2.GetAgentRequest(id="nope")),
    ("DeleteAgent", agent_service_pb2.DeleteAgentRequest(id="nope")),
    (
        "UpdateAgent",
        agent_service_pb2.UpdateAgentRequest(
            agent=agent_pb2.AgentDefinition(id="nope", name="n", base_type=SUMMARIZER)
        ),
    ),
]


@pytest.mark.parametrize(
    ("method", "request_message"), UNKNOWN_AGENT, ids=[m for m, _ in UNKNOWN_AGENT]
)
async def test_unknown_agent_id_is_not_found(
    server: RunningServer, method: str, request_message
) -> None:
    error = await rpc_error(getattr(server.stub, method)(request_message, timeout=10))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "'nope'" in details(error)


async def test_an_empty_agent_definition_names_its_missing_fields(server: RunningServer) -> None:
    request = agent_service_pb2.CreateAgentRequest()

    error = await rpc_error(server.stub.CreateAgent(request, timeout=10))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(error)) == {"agent.name", "agent.base_type"}
