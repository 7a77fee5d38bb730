"""The Python client: keywords to requests, saved agents, retries, streams that survive a drop."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from grpc import aio
from pydantic_ai.models.function import FunctionModel

from tests.helpers import (
    assert_eventually,
    assert_sequences,
    free_port,
    read,
    read_rest,
    type_value,
)
from tests.support.models import Gate
from woolly_grpc._gen.woolly.v1 import agent_service_pb2, run_pb2
from woolly_grpc._gen.woolly.v1.agent_service_pb2_grpc import AgentServiceStub
from woolly_grpc.client import SavedAgent, WoollyClient
from woolly_grpc.config import Settings
from woolly_grpc.testing import RunningServer, running_server


class Proxy:
    """A TCP proxy on loopback whose connections the test can cut, as a network would."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.connections = 0
        self._links: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._links += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
            sink.close()

        await asyncio.gather(
            pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True
        )

    def drop(self) -> None:
        """Reset every open connection (both sides get RST, like a dead link)."""
        for writer in self._links:
            writer.transport.abort()
        self._links.clear()

    async def close(self) -> None:
        self.drop()
        self._server.close()
        await self._server.wait_closed()


async def test_stream_resumes_a_dropped_connection_with_watch_run(settings: Settings) -> None:
    gate = Gate()
    patient = settings.model_copy(update={"orphan_grace_s": 30})
    async with running_server(patient, model=FunctionModel(stream_function=gate.stream)) as srv:
        proxy = Proxy(srv.app.port)
        port = await proxy.start()
        try:
            async with WoollyClient(f"127.0.0.1:{port}") as client:
                events = client.stream("calculator", "summarizer", "what is it?", timeout=30)
                seen = [await anext(events), await anext(events)]  # started, "part one. "
                proxy.drop()  # the model now waits at the gate: nothing more is in flight
                gate.open.set()
                seen += [message async for message in events]
        finally:
            await proxy.close()
        watches = srv.app.metrics.grpc_started.labels(
            "server_stream", "woolly.v1.AgentService", "WatchRun"
        )._value.get()

    assert_sequences(seen)  # each event at most once: a resume repeats nothing
    assert seen[0].WhichOneof("event") == "started"
    assert seen[-1].WhichOneof("event") == "completed"
    assert seen[-1].completed.result.content == "part one. part two."
    assert {m.run_id for m in seen} == {seen[0].run_id}
    assert watches == 1 and proxy.connections == 2, "resumed once, on a new connection"
    assert gate.calls == 1, "resuming never reruns the agent"


async def test_a_run_cancelled_after_a_resume_raises_like_its_stream(settings: Settings) -> None:
    gate = Gate()
    patient = settings.model_copy(update={"orphan_grace_s": 30})
    async with running_server(patient, model=FunctionModel(stream_function=gate.stream)) as srv:
        proxy = Proxy(srv.app.port)
        port = await proxy.start()
        try:
            async with WoollyClient(f"127.0.0.1:{port}") as client:
                events = client.stream("calculator", "summarizer", "what is it?", timeout=30)
                seen = [await anext(events), await anext(events)]
                proxy.drop()
                await srv.stub.CancelRun(agent_service_pb2.CancelRunRequest(run_id=seen[0].run_id))
                with pytest.raises(aio.AioRpcError) as caught:
                    seen += [message async for message in events]
        finally:
            await proxy.close()

    assert caught.value.code() == grpc.StatusCode.CANCELLED
    assert "CANCEL_REASON_EXPLICIT" in (caught.value.details() or "")
    assert [m.sequence for m in seen] == [1, 2] and gate.cancelled.is_set()


async def test_errors_other_than_a_dropped_link_are_raised(server: RunningServer) -> None:
    async with WoollyClient(channel=server.channel) as client:
        with pytest.raises(aio.AioRpcError) as caught:
            [m async for m in client.stream("nope", "summarizer", "q", timeout=10)]
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_saved_agents_by_id_in_execute_stream_and_chain(server: RunningServer) -> None:
    async with WoollyClient(channel=server.channel) as client:
        agent = await client.create_agent(f"client-{uuid.uuid4().hex[:8]}", "summarizer")

        executed = await client.execute("calculator", query="what is it?", agent_id=agent.id)
        streamed = [m async for m in client.stream("calculator", query="hm?", agent_id=agent.id)]
        chained = [
            m
            async for m in client.chain(
                "calculator", [SavedAgent(agent.id), "tester"], "review", timeout=30
            )
        ]
        with pytest.raises(ValueError, match="exactly one"):
            await client.execute("calculator", "summarizer", "q", agent_id=agent.id)

    assert executed.result.agent_id == agent.id
    assert streamed[-1].completed.result.agent_id == agent.id
    results = chained[-1].chain_completed.results
    assert [r.agent_id for r in results] == [agent.id, ""]


async def test_run_options_from_keywords(server: RunningServer) -> None:
    query = f"never asked before {uuid.uuid4()}"
    async with WoollyClient(channel=server.channel) as client:
        with pytest.raises(aio.AioRpcError) as caught:
            await client.execute("calculator", "summarizer", query, cache_policy="only_if_cached")
        detached = await client.execute("calculator", "summarizer", query, detach=True)
        run = await client.get_run(detached.run_id)
        with pytest.raises(ValueError, match="unknown cache policy"):
            await client.execute("calculator", "summarizer", query, cache_policy="sometimes")

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert run.status == run_pb2.RUN_STATUS_SUCCEEDED


@asynccontextmanager
async def flaky_server(failures: int) -> AsyncIterator[tuple[str, dict[str, int]]]:
    """An AgentService whose GetRun and Execute answer UNAVAILABLE `failures` times, then OK."""
    calls = {"GetRun": 0, "Execute": 0}

    def handler(name: str, response: object):
        async def handle(request: object, context: aio.ServicerContext[object, object]) -> object:
            calls[name] += 1
            if calls[name] <= failures:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
            return response

        return handle

    requests = agent_service_pb2
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            handler(name, response),
            request_deserializer=getattr(requests, f"{name}Request").FromString,
            response_serializer=type(response).SerializeToString,
        )
        for name, response in (
            ("GetRun", requests.GetRunResponse(run=run_pb2.Run(id="r1"))),
            ("Execute", requests.ExecuteResponse(run_id="r2")),
        )
    }
    server = aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("woolly.v1.AgentService", handlers)]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", calls
    finally:
        await server.stop(0)


async def test_reads_are_retried_on_unavailable_execute_is_not() -> None:
    async with flaky_server(failures=2) as (target, calls), WoollyClient(target) as client:
        run = await client.get_run("r1")
        with pytest.raises(aio.AioRpcError) as caught:
            await client.execute("calculator", "summarizer", "q", timeout=10)

    assert run.id == "r1" and calls["GetRun"] == 3, "two UNAVAILABLE, then the retry succeeded"
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and calls["Execute"] == 1


async def test_a_plain_stub_without_the_service_config_does_not_retry() -> None:
    # The control for the test above: the retries come from the client's service config.
    async with flaky_server(failures=1) as (target, calls), aio.insecure_channel(target) as ch:
        with pytest.raises(aio.AioRpcError):
            await AgentServiceStub(ch).GetRun(agent_service_pb2.GetRunRequest(run_id="r1"))
    assert calls["GetRun"] == 1


CLIENT_METHODS = {
    "ListAgentTypes": "agent_types",
    "Execute": "execute",
    "StreamExecute": "stream",
    "ExecuteChain": "chain",
    "GetRun": "get_run",
    "CancelRun": "cancel_run",
    "WatchRun": "watch_run",
    "RetryRun": "retry_run",
    "GetServerStatus": "server_status",
    "CreateAgent": "create_agent",
    "GetAgent": "get_agent",
    "ListAgents": "list_agents",
    "UpdateAgent": "update_agent",
    "DeleteAgent": "delete_agent",
}


def test_every_rpc_has_a_client_method() -> None:
    service = agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"]
    assert {m.name for m in service.methods} == set(CLIENT_METHODS)
    assert all(callable(getattr(WoollyClient, name)) for name in CLIENT_METHODS.values())


async def test_watch_run_resumes_after_its_own_starting_point(settings: Settings) -> None:
    """A WatchRun(after=2) dropped before its first event resumes after 2, not from the start."""
    gate = Gate()
    patient = settings.model_copy(update={"orphan_grace_s": 30})
    async with running_server(patient, model=FunctionModel(stream_function=gate.stream)) as srv:
        call = srv.stub.StreamExecute(
            agent_service_pb2.StreamExecuteRequest(
                repository_name="calculator", agent_type=type_value("summarizer"), user_query="q"
            ),
            timeout=30,
        )
        run_id = (await read(call)).run_id
        assert (await read(call)).text_delta.text == "part one. "  # sequence 2
        proxy = Proxy(srv.app.port)
        port = await proxy.start()
        watched = srv.app.metrics.grpc_started.labels(
            "server_stream", "woolly.v1.AgentService", "WatchRun"
        )
        try:
            async with WoollyClient(f"127.0.0.1:{port}") as client:
                events = client.watch_run(run_id, after_sequence=2, timeout=30)
                collecting = asyncio.create_task(collect(events))
                await assert_eventually(lambda: watched._value.get() == 1)
                proxy.drop()  # before any event of the watch arrived
                gate.open.set()
                seen = await collecting
        finally:
            await proxy.close()
        await read_rest(call)

    assert [m.sequence for m in seen] == [3, 4], "after 2, each once"
    assert seen[-1].WhichOneof("event") == "completed"


async def test_watch_run_fails_at_once_when_the_server_is_down() -> None:
    async with WoollyClient(f"127.0.0.1:{free_port()}") as client:
        with pytest.raises(aio.AioRpcError) as caught:
            await collect(client.watch_run("f" * 32))

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def collect(events: Any) -> list[Any]:
    return [message async for message in events]
