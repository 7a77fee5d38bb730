"""StreamExecute: event order, sequences, deltas that add up to the content, liveness."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tests.helpers import ALL_TYPES, assert_eventually, assert_sequences, event_kinds, type_value
from woolly_grpc._gen.woolly.v1 import agent_service_pb2, run_pb2
from woolly_grpc.config import Settings
from woolly_grpc.testing import RunningServer, running_server


def stream_request(agent: str, query: str = "what does it do?"):
    return agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator", agent_type=type_value(agent), user_query=query
    )


@pytest.mark.parametrize("agent", ALL_TYPES)
async def test_stream_invariants(server: RunningServer, agent: str) -> None:
    messages = [m async for m in server.stub.StreamExecute(stream_request(agent), timeout=30)]

    kinds = event_kinds(messages)
    assert kinds[0] == "started" and kinds[-1] == "completed"
    assert kinds.count("started") == 1 and kinds.count("completed") == 1
    assert set(kinds[1:-1]) <= {"text_delta", "tool_call", "tool_result"}
    assert_sequences(messages)
    assert len({m.run_id for m in messages}) == 1
    assert all(m.agent_type == type_value(agent) for m in messages)
    deltas = [m.text_delta.text for m in messages if m.WhichOneof("event") == "text_delta"]
    assert "".join(deltas) == messages[-1].completed.result.content
    calls = [m.tool_call for m in messages if m.WhichOneof("event") == "tool_call"]
    results = [m.tool_result for m in messages if m.WhichOneof("event") == "tool_result"]
    assert calls and {c.tool_call_id for c in calls} == {r.tool_call_id for r in results}
    assert messages[0].started.model == "local"


async def test_text_before_a_tool_call_is_part_of_the_content(server: RunningServer) -> None:
    messages = [m async for m in server.stub.StreamExecute(stream_request("summarizer"))]

    kinds = event_kinds(messages)
    first_tool = kinds.index("tool_call")
    assert "text_delta" in kinds[:first_tool], "the local engine speaks before its first tool"
    preamble = messages[kinds.index("text_delta")].text_delta.text
    assert messages[-1].completed.result.content.startswith(preamble)


async def test_stream_is_live(settings: Settings) -> None:
    """The first chunk reaches the caller while the model is still blocked on the second."""
    first_seen = asyncio.Event()
    model_finished = False

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        nonlocal model_finished
        yield "first chunk. "
        await asyncio.wait_for(first_seen.wait(), timeout=10)
        yield "second chunk."
        model_finished = True

    async with running_server(settings, model=FunctionModel(stream_function=model)) as srv:
        call = srv.stub.StreamExecute(stream_request("summarizer"), timeout=30)
        kinds = []
        async for message in call:
            kinds.append(message.WhichOneof("event"))
            if message.WhichOneof("event") == "text_delta" and not first_seen.is_set():
                assert message.text_delta.text == "first chunk. "
                assert not model_finished
                first_seen.set()
        assert kinds == ["started", "text_delta", "text_delta", "completed"]
        assert model_finished


async def test_cancelling_the_stream_cancels_the_model(settings: Settings) -> None:
    model_cancelled = asyncio.Event()

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        yield "working… "
        try:
            await asyncio.Event().wait()  # a model call that would never end by itself
        except asyncio.CancelledError:
            model_cancelled.set()
            raise
        yield "unreachable"  # pragma: no cover

    async with running_server(settings, model=FunctionModel(stream_function=model)) as srv:
        call = srv.stub.StreamExecute(stream_request("summarizer"))
        async for message in call:
            if message.WhichOneof("event") == "text_delta":
                break
        call.cancel()
        await asyncio.wait_for(model_cancelled.wait(), timeout=10)
        request = agent_service_pb2.GetRunRequest(run_id=message.run_id)

        async def cancelled() -> bool:
            run = (await srv.stub.GetRun(request)).run
            return run.status == run_pb2.RUN_STATUS_CANCELLED

        await assert_eventually(cancelled)
        run = (await srv.stub.GetRun(request)).run
        assert run.cancel_reason == run_pb2.CANCEL_REASON_CLIENT
        assert run.partial_content == "working… "
