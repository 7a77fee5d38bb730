"""Limits and back-pressure: bad sizes are INVALID_ARGUMENT, too much work RESOURCE_EXHAUSTED."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from tests.helpers import details, read, read_rest, type_value, violations
from woolly_grpc._gen.woolly.v1 import agent_service_pb2, run_pb2
from woolly_grpc.config import Settings
from woolly_grpc.testing import RunningServer, running_server


def stream_request(query: str) -> agent_service_pb2.StreamExecuteRequest:
    return agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator", agent_type=type_value("summarizer"), user_query=query
    )


async def rpc_error(call) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_an_oversized_context_is_invalid(server: RunningServer) -> None:
    request = agent_service_pb2.ExecuteRequest(
        repository_name="calculator", agent_type=type_value("summarizer"), user_query="q"
    )
    request.context.update({"blob": "x" * (300 * 1024)})

    error = await rpc_error(server.stub.Execute(request, timeout=10))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the limit is 262,144" in violations(error)["context"]


async def test_a_message_over_the_transport_cap_is_refused_by_grpc(server: RunningServer) -> None:
    request = agent_service_pb2.ExecuteRequest(
        repository_name="calculator",
        agent_type=type_value("summarizer"),
        user_query="q" * (9 << 20),
    )
    error = await rpc_error(server.stub.Execute(request, timeout=20))

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in details(error)


async def test_runs_beyond_the_limit_are_refused_with_a_retry_hint(settings: Settings) -> None:
    gate = asyncio.Event()

    async def gated(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        yield "working. "
        await gate.wait()
        yield "done."

    one = settings.model_copy(update={"max_concurrent_runs": 1})
    async with running_server(one, model=FunctionModel(stream_function=gated)) as srv:
        first = srv.stub.StreamExecute(stream_request("first"), timeout=30)
        started = await read(first)
        await read(first)  # the one run allowed is now at the gate
        refused = await rpc_error(srv.stub.Execute(_execute("second"), timeout=10))
        # The same call joins the run in flight: it is not a second run.
        joined = srv.stub.StreamExecute(stream_request("first"), timeout=30)
        assert (await read(joined)).run_id == started.run_id
        gate.set()
        first_events = await read_rest(first)
        after = await srv.stub.Execute(_execute("third"), timeout=30)

    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "maximum of 1 runs" in details(refused)
    status = rpc_status.from_call(refused)  # type: ignore[arg-type]
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry) for detail in status.details)
    assert retry.retry_delay.ToTimedelta().total_seconds() > 0
    assert first_events[-1].completed.result.content == "working. done."
    assert after.result.content == "working. done."


def _execute(query: str) -> agent_service_pb2.ExecuteRequest:
    return agent_service_pb2.ExecuteRequest(
        repository_name="calculator", agent_type=type_value("summarizer"), user_query=query
    )


class ToolLoop:
    """A model that asks for a tool again after every answer, forever."""

    def __init__(self) -> None:
        self.requests = 0

    async def stream(
        self, messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[DeltaToolCalls]:
        self.requests += 1
        yield {0: DeltaToolCall(name="list_files", json_args="{}")}


@pytest.mark.parametrize(
    ("limits", "said"),
    [
        ({"max_tool_calls": 3}, "more than 3 tool calls"),
        ({"max_model_requests": 4, "max_tool_calls": 100}, "more than 4 model requests"),
    ],
)
async def test_a_run_that_loops_on_tools_fails_at_its_limit(
    settings: Settings, limits: dict[str, int], said: str
) -> None:
    loop = ToolLoop()
    async with running_server(
        settings.model_copy(update=limits), model=FunctionModel(stream_function=loop.stream)
    ) as srv:
        events = []
        with pytest.raises(aio.AioRpcError) as caught:
            async for event in srv.stub.StreamExecute(stream_request("loop"), timeout=30):
                events.append(event)
        request = agent_service_pb2.GetRunRequest(run_id=events[0].run_id)
        run = (await srv.stub.GetRun(request)).run

    error = caught.value

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert said in details(error)
    assert run.status == run_pb2.RUN_STATUS_FAILED
    assert run.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert said in run.error.message
    assert loop.requests <= limits.get("max_model_requests", 50)
    assert [e.tool_call.name for e in events if e.WhichOneof("event") == "tool_call"]
