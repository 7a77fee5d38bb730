"""Execute over real gRPC with the local engine, for every agent type."""

from __future__ import annotations

import pytest
from google.protobuf import json_format

from tests.helpers import ALL_TYPES, type_value
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2, run_pb2
from woolly_grpc.testing import RunningServer

# What each type's answer must contain to prove it read the fixture repository.
EVIDENCE = {
    "summarizer": ["calculator/core.py", "Calculator", "calc"],
    "simplifier": ["process_batch", "calculator/core.py:38"],
    "tester": ["tests/test_", "multiply"],
    "convo_starter": ["?", "process_batch"],
    "documentation": ["add_numbers", "def divide(a: float, b: float) -> float"],
    "chat_assistant": ["calculator/core.py:26"],
}
QUERIES = {"chat_assistant": "where is divide defined?"}


def execute_request(agent: str, query: str = "", **kw) -> agent_service_pb2.ExecuteRequest:
    return agent_service_pb2.ExecuteRequest(
        repository_name="calculator",
        agent_type=type_value(agent),
        user_query=query or QUERIES.get(agent, "Help me understand this code."),
        **kw,
    )


@pytest.mark.parametrize("agent", ALL_TYPES)
async def test_every_agent_type_reads_the_repository(server: RunningServer, agent: str) -> None:
    response = await server.stub.Execute(execute_request(agent), timeout=30)

    result = response.result
    assert response.run_id
    assert result.agent_type == type_value(agent)
    for evidence in EVIDENCE[agent]:
        assert evidence in result.content, f"{agent} answer lacks {evidence!r}"
    assert result.model == "local"
    assert result.usage.requests >= 2 and result.usage.tool_calls >= 1
    assert result.sources, "sources name what the answer rests on"
    assert result.HasField("condensed_summary") and result.condensed_summary
    assert len(result.next_actions) >= 2
    assert 0 < result.confidence <= 1
    assert result.duration.ToTimedelta().total_seconds() > 0
    assert not result.cached


async def test_simplifier_fills_the_suggestions_table(server: RunningServer) -> None:
    result = (await server.stub.Execute(execute_request("simplifier"), timeout=30)).result

    top = result.suggestions_table[0]
    assert top.symbol == "process_batch"
    assert top.location == "calculator/core.py:38"
    assert top.suggestion and top.score > 0
    scores = [row.score for row in result.suggestions_table]
    assert scores == sorted(scores, reverse=True)


async def test_tester_proposes_files_for_untested_code_only(server: RunningServer) -> None:
    result = (await server.stub.Execute(execute_request("tester"), timeout=30)).result

    assert result.test_files_created
    proposed = "\n".join(f.content for f in result.test_files_created)
    assert all(f.path.startswith("tests/test_") for f in result.test_files_created)
    assert "def test_multiply" in proposed and "def test_divide" in proposed
    assert "def test_add_numbers" not in proposed, "add_numbers is already tested"
    compile(result.test_files_created[0].content, "proposed.py", "exec")


async def test_the_answer_is_deterministic(server: RunningServer) -> None:
    bypass = agent_pb2.RunOptions(cache_policy=agent_pb2.CACHE_POLICY_BYPASS)
    first = await server.stub.Execute(execute_request("summarizer", options=bypass), timeout=30)
    second = await server.stub.Execute(execute_request("summarizer", options=bypass), timeout=30)

    assert first.result.content == second.result.content
    assert first.run_id != second.run_id


async def test_get_run_returns_the_finished_run(server: RunningServer) -> None:
    response = await server.stub.Execute(
        execute_request("summarizer", "What is the run record?"), timeout=30
    )

    run = (await server.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=response.run_id))).run
    assert run.status == run_pb2.RUN_STATUS_SUCCEEDED
    assert run.method == "Execute"
    assert run.repository_name == "calculator"
    assert list(run.agent_types) == [agent_pb2.AGENT_TYPE_SUMMARIZER]
    assert list(run.results) == [response.result]
    assert run.partial_content == response.result.content
    assert run.usage == response.result.usage
    assert run.end_time.ToDatetime() >= run.start_time.ToDatetime()
    assert run.last_sequence > 2


async def test_context_reaches_the_agent(server: RunningServer) -> None:
    request = execute_request("chat_assistant", "where is multiply defined?")
    request.context.update({"ticket": "CALC-7", "nested": {"depth": 2}})

    result = (await server.stub.Execute(request, timeout=30)).result

    assert "calculator/core.py:22" in result.content
    assert json_format.MessageToDict(result.metadata)["tool_calls"] >= 1


async def test_list_agent_types_describes_every_type(server: RunningServer) -> None:
    response = await server.stub.ListAgentTypes(agent_service_pb2.ListAgentTypesRequest())

    assert [info.name for info in response.agent_types] == ALL_TYPES
    assert all(info.description for info in response.agent_types)
    by_name = {info.name: info for info in response.agent_types}
    assert "suggestions_table" in by_name["simplifier"].capabilities
    assert "test_files_created" in by_name["tester"].capabilities
