"""OpenTelemetry traces, received over OTLP/gRPC by a real receiver on loopback.

Each call carries a client `traceparent`; its spans must continue that trace: the RPC's span is
the client span's child, the run's is the RPC's, then chain steps, pydantic-ai's agent run, its
model requests and tool calls. The servers export in batches, as in production; the tests flush
the provider before they look.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from grpc import aio
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from pydantic_ai.messages import ModelMessage, ToolReturnPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel

from tests.helpers import assert_eventually, free_port, read, read_rest, trailers, type_value
from tests.support.otlp_receiver import ReceivedSpan, TraceReceiver, running_receiver
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2
from woolly_grpc._gen.woolly.v1.agent_service_pb2_grpc import AgentServiceStub
from woolly_grpc.config import Settings
from woolly_grpc.interceptors import TracingInterceptor, build_interceptors
from woolly_grpc.interceptors.metrics import ACCESS_LOGGER
from woolly_grpc.runs import Refusals, ReplaySlots
from woolly_grpc.testing import RunningServer, running_server

SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_SERVER
README_LINE = b"A small command-line calculator that adds, subtracts"
"""What the tools read from the fixture repository: tool results are content too."""


@dataclass
class Traced:
    server: RunningServer
    receiver: TraceReceiver
    provider: TracerProvider


@dataclass(frozen=True)
class Parent:
    """The client's span: a `traceparent` to send."""

    trace_id: str
    span_id: str

    @classmethod
    def new(cls) -> Parent:
        return cls(secrets.token_hex(16), secrets.token_hex(8))

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("traceparent", f"00-{self.trace_id}-{self.span_id}-01"),)


def exporting_to(receiver: TraceReceiver) -> TracerProvider:
    provider = TracerProvider(resource=Resource({"service.name": "woolly-test"}))
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{receiver.port}", insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


async def spans_of(traced: Traced, parent: Parent) -> list[ReceivedSpan]:
    """The trace's spans, once its RPC span has been exported."""

    async def exported() -> bool:
        # In a thread: exporting is a blocking gRPC call to a receiver on this event loop.
        await asyncio.to_thread(traced.provider.force_flush, 10_000)
        spans = traced.receiver.spans()
        return any(s.parent_id == parent.span_id for s in spans)

    await assert_eventually(exported, timeout=20)
    return [s for s in traced.receiver.spans() if s.trace_id == parent.trace_id]


def one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_id == parent.span_id]


def assert_one_tree_under(spans: list[ReceivedSpan], parent: Parent) -> ReceivedSpan:
    """Every span descends from one server span, the client span's child; returns that."""
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if s.parent_id not in ids]
    assert len(roots) == 1, [(s.name, s.parent_id) for s in roots]
    root = roots[0]
    assert root.parent_id == parent.span_id and root.kind == SERVER_KIND
    return root


def execute_request(query: str, agent: str = "summarizer") -> agent_service_pb2.ExecuteRequest:
    return agent_service_pb2.ExecuteRequest(
        repository_name="calculator", agent_type=type_value(agent), user_query=query
    )


@pytest_asyncio.fixture(scope="module")
async def receiver() -> AsyncIterator[TraceReceiver]:
    async with running_receiver() as running:
        yield running


@pytest_asyncio.fixture(scope="module")
async def traced(settings: Settings, receiver: TraceReceiver) -> AsyncIterator[Traced]:
    """A server with the local engine, tracing without content (the default)."""
    provider = exporting_to(receiver)
    async with running_server(settings, tracer_provider=provider) as server:
        yield Traced(server, receiver, provider)


held = asyncio.Event()
"""Released by the test that holds the scripted model's answers (`hold` in the query)."""


async def scripted(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | dict[int, DeltaToolCall]]:
    """Reads the README with a tool, then answers (after `held`, if the query says `hold`)."""
    if not any(isinstance(p, ToolReturnPart) for p in messages[-1].parts):
        yield {0: DeltaToolCall("read_file", '{"path": "README.md"}', tool_call_id="readme")}
        return
    prompt = next(p.content for p in messages[0].parts if isinstance(p, UserPromptPart))
    assert isinstance(prompt, str)
    if "hold" in prompt:
        await held.wait()
    yield "The answer is "
    yield f"answer-{prompt.split()[0]}"


@pytest_asyncio.fixture(scope="module")
async def with_content(settings: Settings, receiver: TraceReceiver) -> AsyncIterator[Traced]:
    """A server with a scripted model, tracing with content (`WOOLLY_TRACE_CONTENT=true`)."""
    provider = exporting_to(receiver)
    content = settings.model_copy(update={"trace_content": True})
    model = FunctionModel(stream_function=scripted)
    async with running_server(content, model=model, tracer_provider=provider) as server:
        yield Traced(server, receiver, provider)


async def test_execute_is_one_tree_from_the_callers_span(traced: Traced) -> None:
    parent, marker = Parent.new(), f"marker-{uuid.uuid4().hex}"

    response = await traced.server.stub.Execute(
        execute_request(f"{marker} what does it do?"), metadata=parent.metadata, timeout=30
    )

    spans = await spans_of(traced, parent)
    rpc = assert_one_tree_under(spans, parent)
    assert rpc.name == "woolly.v1.AgentService/Execute"
    assert rpc.attributes["rpc.system"] == "grpc"
    assert rpc.attributes["rpc.method"] == "Execute"
    assert rpc.attributes["rpc.grpc.status_code"] == 0
    assert rpc.attributes["woolly.cache.outcome"] == "miss"
    assert rpc.attributes["woolly.cache.hit"] is False
    assert rpc.resource["service.name"] == "woolly-test"
    run = one(spans, "run Execute")
    assert run.parent_id == rpc.span_id
    assert run.attributes["woolly.run.status"] == "succeeded"
    assert run.attributes["woolly.agent_types"] == ["summarizer"]
    agent = one(spans, "invoke_agent summarizer")
    assert agent.parent_id == run.span_id
    below = children(spans, agent)
    requests = [s for s in below if s.attributes["gen_ai.operation.name"] == "chat"]
    tools = [s for s in below if s.attributes["gen_ai.operation.name"] == "execute_tool"]
    assert requests and tools, "the local engine asks the model and calls tools"
    for request in requests:
        assert request.attributes["gen_ai.usage.input_tokens"] > 0
        assert request.attributes["gen_ai.usage.output_tokens"] > 0
    assert sum(s.attributes["gen_ai.usage.output_tokens"] for s in requests) == (
        response.result.usage.output_tokens
    )
    assert {s.attributes.get("woolly.run_id") for s in spans} == {response.run_id}
    # Content is off by default: not the prompt, not the answer, not what the tools read.
    raw = traced.receiver.raw()
    assert marker.encode() not in raw
    assert response.result.content.encode() not in raw
    assert README_LINE not in raw


async def test_a_stream_with_tool_calls(traced: Traced) -> None:
    parent = Parent.new()
    request = agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator",
        agent_type=type_value("chat_assistant"),
        user_query=f"where is divide defined? {uuid.uuid4().hex}",
    )

    messages = [
        m
        async for m in traced.server.stub.StreamExecute(
            request, metadata=parent.metadata, timeout=30
        )
    ]

    spans = await spans_of(traced, parent)
    rpc = assert_one_tree_under(spans, parent)
    assert rpc.name == "woolly.v1.AgentService/StreamExecute"
    run = one(spans, "run StreamExecute")
    assert run.parent_id == rpc.span_id
    agent = one(spans, "invoke_agent chat_assistant")
    assert agent.parent_id == run.span_id
    called = [m.tool_call for m in messages if m.WhichOneof("event") == "tool_call"]
    tools = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "execute_tool"]
    assert called and sorted(s.attributes["gen_ai.tool.name"] for s in tools) == sorted(
        c.name for c in called
    )
    assert {s.attributes["gen_ai.tool.call.id"] for s in tools} == {c.tool_call_id for c in called}
    assert all(s.parent_id == agent.span_id for s in tools)
    assert {s.attributes.get("woolly.run_id") for s in spans} == {messages[0].run_id}


async def test_a_chain_has_a_span_per_step(traced: Traced) -> None:
    parent = Parent.new()
    request = agent_service_pb2.ExecuteChainRequest(
        repository_name="calculator",
        agent_chain=[type_value("summarizer"), type_value("documentation")],
        user_query=f"document it {uuid.uuid4().hex}",
    )

    messages = [
        m
        async for m in traced.server.stub.ExecuteChain(
            request, metadata=parent.metadata, timeout=30
        )
    ]

    spans = await spans_of(traced, parent)
    rpc = assert_one_tree_under(spans, parent)
    run = one(spans, "run ExecuteChain")
    assert run.parent_id == rpc.span_id
    steps = [one(spans, "chain step 0 summarizer"), one(spans, "chain step 1 documentation")]
    for index, step in enumerate(steps):
        assert step.parent_id == run.span_id
        assert step.attributes["woolly.chain.step"] == index
        assert step.attributes["woolly.chain.step.cached"] is False
        agent_type = step.attributes["woolly.agent_type"]
        assert one(spans, f"invoke_agent {agent_type}").parent_id == step.span_id
    assert {s.attributes.get("woolly.run_id") for s in spans} == {messages[0].run_id}


async def test_a_cache_hit_is_one_span_naming_the_run_it_replays(traced: Traced) -> None:
    request = execute_request(f"twice {uuid.uuid4().hex}")
    first = await traced.server.stub.Execute(request, timeout=30)
    parent = Parent.new()

    call = traced.server.stub.Execute(request, metadata=parent.metadata, timeout=30)
    assert (await call).result.cached

    [rpc] = await spans_of(traced, parent)
    assert rpc.parent_id == parent.span_id
    assert rpc.attributes["woolly.cache.outcome"] == "hit"
    assert rpc.attributes["woolly.cache.hit"] is True
    assert rpc.attributes["woolly.run_id"] == first.run_id
    assert rpc.attributes["woolly.cache.age_s"] == int((await trailers(call))["woolly-cache-age-s"])


async def test_the_access_log_line_carries_the_trace_id(
    traced: Traced, caplog: pytest.LogCaptureFixture
) -> None:
    parent = Parent.new()
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)

    await traced.server.stub.Execute(
        execute_request(f"logged {uuid.uuid4().hex}"), metadata=parent.metadata, timeout=30
    )

    [record] = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert getattr(record, "fields", {})["trace_id"] == parent.trace_id
    assert f"trace_id={parent.trace_id}" in record.getMessage()


async def test_content_is_exported_when_asked_for(with_content: Traced) -> None:
    parent, marker = Parent.new(), f"marker{uuid.uuid4().hex}"

    response = await with_content.server.stub.Execute(
        execute_request(f"{marker} what?"), metadata=parent.metadata, timeout=30
    )

    await spans_of(with_content, parent)
    raw = with_content.receiver.raw()
    assert marker.encode() in raw
    assert response.result.content == f"The answer is answer-{marker}"
    assert response.result.content.encode() in raw
    assert README_LINE in raw


async def test_a_coalesced_call_is_marked_and_links_to_the_run_it_joined(
    with_content: Traced,
) -> None:
    request = agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator",
        agent_type=type_value("summarizer"),
        user_query=f"q{uuid.uuid4().hex} hold",
    )
    leader, follower = Parent.new(), Parent.new()
    stub = with_content.server.stub

    first = stub.StreamExecute(request, metadata=leader.metadata, timeout=30)
    started = await read(first)
    second = stub.StreamExecute(request, metadata=follower.metadata, timeout=30)
    assert (await read(second)).run_id == started.run_id
    held.set()
    await read_rest(first)
    await read_rest(second)
    assert (await trailers(second))["woolly-cache"] == "coalesced"

    [joined] = await spans_of(with_content, follower)
    assert joined.attributes["woolly.cache.outcome"] == "coalesced"
    assert joined.attributes["woolly.run.joined"] is True
    assert joined.attributes["woolly.run_id"] == started.run_id
    run = one(await spans_of(with_content, leader), "run StreamExecute")
    assert joined.links == (run.span_id,)


async def test_a_watcher_links_to_the_run(traced: Traced) -> None:
    run = await traced.server.stub.Execute(execute_request(f"watch {uuid.uuid4().hex}"))
    parent = Parent.new()

    watch = agent_service_pb2.WatchRunRequest(run_id=run.run_id)
    [m async for m in traced.server.stub.WatchRun(watch, metadata=parent.metadata, timeout=30)]

    [rpc] = await spans_of(traced, parent)
    assert rpc.name == "woolly.v1.AgentService/WatchRun"
    assert rpc.attributes["woolly.run_id"] == run.run_id
    assert len(rpc.links) == 1


def test_without_a_provider_nothing_traces(server: RunningServer) -> None:
    app = server.app
    assert app.tracing is None and app.runs.tracer is None
    chain = build_interceptors(None, replays=ReplaySlots(1, Refusals()))
    assert not [i for i in chain if isinstance(i, TracingInterceptor)]


async def test_serve_exports_where_otel_variables_say(
    repos_root: Path, tmp_path: Path, receiver: TraceReceiver
) -> None:
    """The production set-up: the SDK reads `OTEL_*`, batches, and flushes on SIGTERM."""
    port = free_port()
    env = os.environ | {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_SERVICE_NAME": "woolly-from-env",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",  # nothing leaves before the flush at stop
        "WOOLLY_PORT": str(port),
        "WOOLLY_HOST": "127.0.0.1",
        "WOOLLY_METRICS_PORT": "0",
        "WOOLLY_REPOS_ROOT": str(repos_root),
        "WOOLLY_DATABASE_URL": f"sqlite:///{tmp_path / 'woolly.db'}",
    }
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "woolly_grpc", "serve"),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    parent = Parent.new()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = AgentServiceStub(channel)
            request = execute_request(f"from env {uuid.uuid4().hex}")
            request.options.cache_policy = agent_pb2.CACHE_POLICY_BYPASS

            async def answered() -> Any:
                try:
                    return await stub.Execute(request, metadata=parent.metadata, timeout=10)
                except aio.AioRpcError:
                    return None  # not listening yet

            await assert_eventually(answered, timeout=30, every=0.1)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    spans = [s for s in receiver.spans() if s.trace_id == parent.trace_id]
    names = [s.name for s in spans if s.parent_id == parent.span_id]
    assert names == ["woolly.v1.AgentService/Execute"]
    assert "run Execute" in {s.name for s in spans}
    assert {s.resource["service.name"] for s in spans} == {"woolly-from-env"}
