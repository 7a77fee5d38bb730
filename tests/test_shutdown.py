"""Graceful stop: in-flight streams finish within the grace; after it, runs end as SHUTDOWN."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tests.helpers import health_stub, type_value
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
        assert (await call.read()).WhichOneof("event") == "started"
        assert (await call.read()).text_delta.text == "before stop. "

        stopping = asyncio.create_task(stop(app, grace=20))
        try:
            health = await health_stub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except aio.AioRpcError as error:  # the listener may already be closed to new calls
            assert error.code() == grpc.StatusCode.UNAVAILABLE
        else:
            assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        gate.set()
        rest = []
        while (message := await call.read()) is not aio.EOF:
            rest.append(message)
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
        run_id = (await call.read()).run_id
        await call.read()

        await stop(app, grace=0.2)

        with pytest.raises(aio.AioRpcError) as caught:
            while await call.read() is not aio.EOF:
                pass
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    assert model_cancelled.is_set()
    run = app.runs.get(run_id)
    assert run.status == run_pb2.RUN_STATUS_CANCELLED
    assert run.cancel_reason == run_pb2.CANCEL_REASON_SHUTDOWN
    assert run.partial_content == "started. "
