"""Graceful stop: in-flight streams finish within the grace; after it, runs end as SHUTDOWN."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc import aio
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tests.helpers import assert_eventually, read, read_rest, type_value
from woolly_grpc._gen.woolly.v1 import agent_service_pb2, run_pb2
from woolly_grpc._gen.woolly.v1.agent_service_pb2_grpc import AgentServiceStub
from woolly_grpc.config import Settings
from woolly_grpc.server import build, start, stop

REQUEST = agent_service_pb2.StreamExecuteRequest(
    repository_name="calculator", agent_type=type_value("summarizer"), user_query="q"
)


async def test_in_flight_stream_finishes_within_the_grace(settings: Settings) -> None:
    gate = asyncio.Event()

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        yield "before stop. "
        await gate.wait()
        yield "after stop."

    app = build(
        settings.model_copy(update={"host": "127.0.0.1", "port": 0}),
        model=FunctionModel(stream_function=model),
    )
    await start(app)
    async with aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        call = AgentServiceStub(channel).StreamExecute(REQUEST, timeout=30)
        assert (await read(call)).WhichOneof("event") == "started"
        assert (await read(call)).text_delta.text == "before stop. "

        stopping = asyncio.create_task(stop(app, grace=20))
        stub = AgentServiceStub(channel)

        async def new_calls_refused() -> bool:
            try:
                await stub.ListAgentTypes(agent_service_pb2.ListAgentTypesRequest(), timeout=5)
            except aio.AioRpcError as error:
                return error.code() == grpc.StatusCode.UNAVAILABLE
            return False

        await assert_eventually(new_calls_refused)
        gate.set()
        rest = await read_rest(call)
        assert [m.WhichOneof("event") for m in rest] == ["text_delta", "completed"]
        assert await call.code() == grpc.StatusCode.OK
        await stopping


async def test_runs_still_going_after_the_grace_are_cancelled_as_shutdown(
    settings: Settings,
) -> None:
    model_cancelled = asyncio.Event()

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        yield "started. "
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            model_cancelled.set()
            raise
        yield "never"  # pragma: no cover

    app = build(
        settings.model_copy(update={"host": "127.0.0.1", "port": 0}),
        model=FunctionModel(stream_function=model),
    )
    await start(app)
    async with aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        call = AgentServiceStub(channel).StreamExecute(REQUEST, timeout=30)
        run_id = (await read(call)).run_id
        await read(call)

        await stop(app, grace=0.2)

        with pytest.raises(aio.AioRpcError) as caught:
            await read_rest(call)
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    assert model_cancelled.is_set()
    run = await app.runs.get(run_id, tenant="")
    assert run.status == run_pb2.RUN_STATUS_CANCELLED
    assert run.cancel_reason == run_pb2.CANCEL_REASON_SHUTDOWN
    assert run.partial_content == "started. "
