"""/metrics over HTTP: every counter moves by exactly what known calls imply (before/after)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc import aio
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tests.helpers import (
    Scrape,
    assert_eventually,
    free_port,
    health_stub,
    read,
    scrape_metrics,
    trailers,
    type_value,
)
from woolly_grpc._gen.woolly.v1 import agent_service_pb2
from woolly_grpc.api import CACHE_TRAILER
from woolly_grpc.config import Settings
from woolly_grpc.observability.metrics import GO_CODE_NAMES
from woolly_grpc.server import StartupError
from woolly_grpc.testing import RunningServer, running_server

AGENT = "woolly.v1.AgentService"
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"


def rpc(method: str, kind: str = "unary", service: str = AGENT) -> dict[str, str]:
    return {"grpc_type": kind, "grpc_service": service, "grpc_method": method}


@dataclass
class Metered:
    srv: RunningServer
    port: int
    before: Scrape | None = None

    async def mark(self) -> None:
        self.before = await scrape_metrics(self.port)

    async def delta(self, name: str, **labels: str) -> float:
        """How much the sample moved since `mark()`."""
        assert self.before is not None
        return (await scrape_metrics(self.port)).get(name, **labels) - self.before.get(
            name, **labels
        )


@pytest_asyncio.fixture(scope="module")
async def metered(settings: Settings) -> AsyncIterator[Metered]:
    """A server of its own (local engine) with /metrics on a free port."""
    port = free_port()
    async with running_server(settings.model_copy(update={"metrics_port": port})) as srv:
        yield Metered(srv, port)


def execute_request(query: str, **fields) -> agent_service_pb2.ExecuteRequest:
    fields.setdefault("repository_name", "calculator")
    return agent_service_pb2.ExecuteRequest(
        agent_type=type_value("summarizer"), user_query=query, **fields
    )


def stream_request(query: str) -> agent_service_pb2.StreamExecuteRequest:
    return agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator", agent_type=type_value("summarizer"), user_query=query
    )


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex}"


async def code_of(call) -> grpc.StatusCode:
    try:
        await call
    except aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_unary_calls_are_counted_by_their_final_code(metered: Metered) -> None:
    stub, query = metered.srv.stub, unique("what does it do?")
    await metered.mark()

    codes = [await code_of(stub.Execute(execute_request(query), timeout=30))]
    hit = stub.Execute(execute_request(query), timeout=30)
    codes.append(await code_of(hit))
    codes.append(await code_of(stub.Execute(execute_request(""), timeout=30)))
    codes.append(await code_of(stub.Execute(execute_request("q", repository_name="nope"))))
    # UNIMPLEMENTED while saved agents are pending, NOT_FOUND once they land: either is counted.
    crud = await code_of(stub.GetAgent(agent_service_pb2.GetAgentRequest(id="nope"), timeout=10))

    assert (await trailers(hit))[CACHE_TRAILER] == "hit"
    by_code = Counter(codes)
    assert by_code == {
        grpc.StatusCode.OK: 2,
        grpc.StatusCode.INVALID_ARGUMENT: 1,
        grpc.StatusCode.NOT_FOUND: 1,
    }
    execute = rpc("Execute")
    for code in grpc.StatusCode:
        moved = await metered.delta(
            "grpc_server_handled_total", **execute, grpc_code=GO_CODE_NAMES[code]
        )
        assert moved == by_code[code], code
    assert crud in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND)
    get_agent = rpc("GetAgent") | {"grpc_code": GO_CODE_NAMES[crud]}
    assert await metered.delta("grpc_server_handled_total", **get_agent) == 1
    assert await metered.delta("grpc_server_started_total", **execute) == 4
    assert await metered.delta("grpc_server_msg_received_total", **execute) == 4
    assert await metered.delta("grpc_server_msg_sent_total", **execute) == 2, "errors send none"
    assert await metered.delta("grpc_server_handling_seconds_count", **execute) == 4
    # One run: the hit replayed it, and bad requests fail before a run starts.
    ran = {"agent_type": "summarizer", "status": "succeeded"}
    assert await metered.delta("agent_requests_total", **ran) == 1
    assert await metered.delta("agent_request_duration_seconds_count", agent_type="summarizer") == 1
    assert await metered.delta("cache_hits_total", agent_type="summarizer") == 1


async def test_a_stream_counts_every_message_and_one_ttft(metered: Metered) -> None:
    request = stream_request(unique("where is divide?"))
    await metered.mark()

    messages = [m async for m in metered.srv.stub.StreamExecute(request, timeout=30)]
    replayed = [m async for m in metered.srv.stub.StreamExecute(request, timeout=30)]

    stream = rpc("StreamExecute", "server_stream")
    assert len(messages) > 3 and 3 <= len(replayed) <= len(messages)  # stored compact
    assert replayed[-1].completed.result.cached
    sent = len(messages) + len(replayed)
    assert await metered.delta("grpc_server_msg_sent_total", **stream) == sent
    assert await metered.delta("grpc_server_msg_received_total", **stream) == 2
    assert await metered.delta("grpc_server_handled_total", **stream, grpc_code="OK") == 2
    summarizer = {"agent_type": "summarizer"}
    assert await metered.delta("agent_time_to_first_token_seconds_count", **summarizer) == 1
    assert await metered.delta("agent_requests_total", **summarizer, status="succeeded") == 1
    usage = messages[-1].completed.result.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    tokens = "agent_tokens_total"
    assert await metered.delta(tokens, **summarizer, direction="input") == usage.input_tokens
    assert await metered.delta(tokens, **summarizer, direction="output") == usage.output_tokens
    tools = Counter(m.tool_call.name for m in messages if m.WhichOneof("event") == "tool_call")
    assert tools, "the local engine reads the repository with its tools"
    for tool, count in tools.items():
        assert await metered.delta("agent_tool_calls_total", **summarizer, tool=tool) == count


async def test_chain_steps_by_source_and_ttft_per_step(metered: Metered) -> None:
    query = unique("review it")

    async def chain(*agents: str) -> list[agent_service_pb2.ExecuteChainResponse]:
        request = agent_service_pb2.ExecuteChainRequest(
            repository_name="calculator",
            agent_chain=[type_value(a) for a in agents],
            user_query=query,
        )
        return [m async for m in metered.srv.stub.ExecuteChain(request, timeout=30)]

    await metered.mark()
    await chain("summarizer")
    second = await chain("summarizer", "tester")  # step 0 comes from the step cache

    assert [r.cached for r in second[-1].chain_completed.results] == [True, False]
    steps = "agent_chain_steps_total"
    assert await metered.delta(steps, agent_type="summarizer", source="model") == 1
    assert await metered.delta(steps, agent_type="summarizer", source="cache") == 1
    assert await metered.delta(steps, agent_type="tester", source="model") == 1
    ttft = "agent_time_to_first_token_seconds_count"
    assert await metered.delta(ttft, agent_type="summarizer") == 1, "not for the cached step"
    assert await metered.delta(ttft, agent_type="tester") == 1
    assert await metered.delta("agent_requests_total", agent_type="chain", status="succeeded") == 2
    assert await metered.delta("grpc_server_msg_sent_total", **rpc("ExecuteChain", "server_stream"))


async def test_health_and_reflection_are_counted(metered: Metered) -> None:
    health, channel = health_stub(metered.srv.channel), metered.srv.channel
    await metered.mark()

    await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=30)
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()
    reflect = channel.stream_stream(
        f"/{REFLECTION}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=AGENT),
    ]
    assert len([r async for r in reflect(iter(requests), timeout=5)]) == 2

    check = rpc("Check", service=HEALTH)
    assert await metered.delta("grpc_server_handled_total", **check, grpc_code="OK") == 1
    assert await metered.delta("grpc_server_msg_received_total", **check) == 1
    assert await metered.delta("grpc_server_msg_sent_total", **check) == 1
    bidi = rpc("ServerReflectionInfo", "bidi_stream", REFLECTION)
    assert await metered.delta("grpc_server_handled_total", **bidi, grpc_code="OK") == 1
    assert await metered.delta("grpc_server_msg_received_total", **bidi) == 2
    assert await metered.delta("grpc_server_msg_sent_total", **bidi) == 2
    watched = rpc("Watch", "server_stream", HEALTH)

    async def watch_cancelled() -> bool:
        return (
            await metered.delta("grpc_server_handled_total", **watched, grpc_code="Canceled") == 1
        )

    await assert_eventually(watch_cancelled)
    assert await metered.delta("grpc_server_msg_sent_total", **watched) == 1


async def test_unknown_methods_are_not_labelled(metered: Metered) -> None:
    method: Any = metered.srv.channel.unary_unary(f"/{AGENT}/NoSuchMethod")
    call = method(b"", timeout=5)
    assert await code_of(call) == grpc.StatusCode.UNIMPLEMENTED

    scrape = await scrape_metrics(metered.port)
    assert "NoSuchMethod" not in scrape.labels("grpc_server_started_total", "grpc_method")
    assert "Execute" in scrape.labels("grpc_server_started_total", "grpc_method")


class HeldModel:
    """Streams a first word, then holds until the gate opens."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        yield "first "
        await self.gate.wait()
        yield "done."


async def test_cancel_deadline_and_overload_get_their_codes(settings: Settings) -> None:
    held, port = HeldModel(), free_port()
    one_run = settings.model_copy(update={"metrics_port": port, "max_concurrent_runs": 1})
    async with running_server(one_run, model=FunctionModel(stream_function=held.stream)) as srv:
        metered = Metered(srv, port)
        await metered.mark()
        call = srv.stub.StreamExecute(stream_request("held"), timeout=30)
        while (await read(call)).WhichOneof("event") != "text_delta":
            pass
        assert (await scrape_metrics(port)).get("active_agents") == 1

        busy = await code_of(srv.stub.Execute(execute_request("another"), timeout=10))
        call.cancel()
        cancelled = {"agent_type": "summarizer", "status": "cancelled"}

        def runs_cancelled(count: int):
            async def check() -> bool:
                scrape = await scrape_metrics(port)
                assert metered.before is not None
                ended = scrape.get("agent_requests_total", **cancelled)
                ended -= metered.before.get("agent_requests_total", **cancelled)
                return ended == count and scrape.get("active_agents") == 0

            return check

        await assert_eventually(runs_cancelled(1))
        late = await code_of(srv.stub.Execute(execute_request("late"), timeout=0.5))
        await assert_eventually(runs_cancelled(2))
        held.gate.set()

        assert busy == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert late == grpc.StatusCode.DEADLINE_EXCEEDED
        stream, execute = rpc("StreamExecute", "server_stream"), rpc("Execute")
        handled = "grpc_server_handled_total"
        assert await metered.delta(handled, **stream, grpc_code="Canceled") == 1
        assert await metered.delta(handled, **execute, grpc_code="ResourceExhausted") == 1
        assert await metered.delta(handled, **execute, grpc_code="DeadlineExceeded") == 1
        assert await metered.delta("grpc_server_handled_total", **stream, grpc_code="OK") == 0
        ttft = "agent_time_to_first_token_seconds_count"
        assert await metered.delta(ttft, agent_type="summarizer") == 2


async def test_a_taken_metrics_port_stops_start_up(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=f"cannot serve /metrics on 127.0.0.1:{port}"):
            async with running_server(settings.model_copy(update={"metrics_port": port})):
                pass


async def test_no_endpoint_when_the_port_is_0(server: RunningServer) -> None:
    assert server.app.settings.metrics_port == 0
    assert server.app.metrics_endpoint is None
