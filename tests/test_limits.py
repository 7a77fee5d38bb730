"""Limits and back-pressure: bad sizes are INVALID_ARGUMENT, too much work RESOURCE_EXHAUSTED."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status
from pydantic import SecretStr
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from tests.helpers import details, read, read_rest, type_value, violations
from tests.support.models import Gate
from tests.support.redis_server import RedisServer
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2, run_pb2
from woolly_grpc.cache import ResultCache
from woolly_grpc.config import Settings
from woolly_grpc.interceptors.caching import key_payload
from woolly_grpc.observability.metrics import Metrics
from woolly_grpc.store import MemoryStore
from woolly_grpc.testing import RunningServer, running_server


def stream_request(query: str) -> agent_service_pb2.StreamExecuteRequest:
    return agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator", agent_type=type_value("summarizer"), user_query=query
    )


async def rpc_error(call) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as caught:
        await call
    return caught.value


def gated(gate: asyncio.Event) -> FunctionModel:
    """A model that streams "working. ", then "done." once `gate` is set."""

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        yield "working. "
        await gate.wait()
        yield "done."

    return FunctionModel(stream_function=stream)


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


async def test_runs_beyond_the_limit_are_refused_with_a_retry_hint(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused runs are RESOURCE_EXHAUSTED with RetryInfo, counted by limit, and logged once
    per interval with their number (not once per call)."""
    caplog.set_level(logging.WARNING, logger="woolly_grpc.runs.limits")
    gate = asyncio.Event()

    one = settings.model_copy(update={"max_concurrent_runs": 1})
    async with running_server(one, model=gated(gate)) as srv:
        first = srv.stub.StreamExecute(stream_request("first"), timeout=30)
        started = await read(first)
        await read(first)  # the one run allowed is now at the gate
        refused = await rpc_error(srv.stub.Execute(_execute("second"), timeout=10))
        more = [await rpc_error(srv.stub.Execute(_execute(f"more {i}"))) for i in range(5)]
        counted = srv.app.metrics.registry.get_sample_value(
            "overload_refusals_total", {"limit": "server"}
        )
        # The same call joins the run in flight: it is not a second run.
        joined = srv.stub.StreamExecute(stream_request("first"), timeout=30)
        assert (await read(joined)).run_id == started.run_id
        gate.set()
        first_events = await read_rest(first)
        after = await srv.stub.Execute(_execute("third"), timeout=30)

    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "maximum of 1 runs" in details(refused)
    assert {e.code() for e in more} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert counted == 6
    said = [r.getMessage() for r in caplog.records if "refusing work" in r.getMessage()]
    assert len(said) == 1 and "1 at the server limit" in said[0]
    status = rpc_status.from_call(refused)  # type: ignore[arg-type]
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry) for detail in status.details)
    assert retry.retry_delay.ToTimedelta().total_seconds() > 0
    assert first_events[-1].completed.result.content == "working. done."
    assert after.result.content == "working. done."


def _execute(query: str, **options: Any) -> agent_service_pb2.ExecuteRequest:
    return agent_service_pb2.ExecuteRequest(
        repository_name="calculator",
        agent_type=type_value("summarizer"),
        user_query=query,
        options=agent_pb2.RunOptions(**options),
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


def _retry_delay_s(error: aio.AioRpcError) -> float | None:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    retry = error_details_pb2.RetryInfo()
    if status is None or not any(detail.Unpack(retry) for detail in status.details):
        return None
    delay: float = retry.retry_delay.ToTimedelta().total_seconds()
    return delay


async def test_a_tenant_at_its_limit_is_refused_while_others_run(settings: Settings) -> None:
    gate = asyncio.Event()

    alice = (("authorization", "Bearer k-alice-limits"),)
    bob = (("authorization", "Bearer k-bob-limits"),)
    limited = settings.model_copy(
        update={
            "api_keys": SecretStr("alice:k-alice-limits,bob:k-bob-limits"),
            "max_concurrent_runs": 4,
            "tenant_max_concurrent_runs": 1,
        }
    )
    async with running_server(limited, model=gated(gate)) as srv:
        first = srv.stub.StreamExecute(stream_request("alice 1"), metadata=alice, timeout=30)
        started = await read(first)
        await read(first)  # alice's one run is now at the gate
        refused = await rpc_error(srv.stub.Execute(_execute("alice 2"), metadata=alice, timeout=10))
        # Joining her identical run in flight takes no slot.
        joined = srv.stub.StreamExecute(stream_request("alice 1"), metadata=alice, timeout=30)
        assert (await read(joined)).run_id == started.run_id
        # Bob has slots of his own.
        theirs = srv.stub.StreamExecute(stream_request("bob 1"), metadata=bob, timeout=30)
        bob_started = await read(theirs)
        assert (await read(theirs)).text_delta.text == "working. "
        gate.set()
        alice_events = await read_rest(first)
        bob_events = await read_rest(theirs)
        await read_rest(joined)
        # Her slot is free again once her run ended.
        after = await srv.stub.Execute(_execute("alice 3"), metadata=alice, timeout=30)

    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "this tenant is running its maximum of 1 concurrent runs" in details(refused)
    assert (_retry_delay_s(refused) or 0) > 0
    assert bob_started.run_id != started.run_id
    assert alice_events[-1].completed.result.content == "working. done."
    assert bob_events[-1].completed.result.content == "working. done."
    assert after.result.content == "working. done."


async def test_without_a_tenant_limit_one_tenant_may_use_every_slot(settings: Settings) -> None:
    gate = asyncio.Event()

    two = settings.model_copy(update={"max_concurrent_runs": 2})
    async with running_server(two, model=gated(gate)) as srv:
        calls = [srv.stub.StreamExecute(stream_request(f"q{i}"), timeout=30) for i in (1, 2)]
        for call in calls:
            await read(call)
            await read(call)
        refused = await rpc_error(srv.stub.Execute(_execute("q3"), timeout=10))
        gate.set()
        for call in calls:
            await read_rest(call)

    assert "the server is running its maximum of 2 runs" in details(refused)


MAX_TTL = timedelta(days=1)


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_cache_ttl_above_the_maximum_is_refused_and_the_maximum_is_kept(
    settings: Settings, redis_server: RedisServer, backend: str
) -> None:
    cache_url = "memory://"
    if backend == "redis":
        await redis_server.flush()
        cache_url = redis_server.url
    update = {"cache_url": cache_url, "max_cache_ttl_s": MAX_TTL.total_seconds()}
    async with running_server(settings.model_copy(update=update)) as srv:
        huge = _execute("kept for ever", cache_ttl=timedelta(days=3650))
        refused = await rpc_error(srv.stub.Execute(huge, timeout=10))
        at_max = _execute("kept for a day", cache_ttl=MAX_TTL)
        await srv.stub.Execute(at_max, timeout=30)

        cache = srv.app.cache
        method = "/woolly.v1.AgentService/Execute"
        refused_entry = await cache.get(cache.key(method, key_payload(huge), ""))
        key = cache.key(method, key_payload(at_max), "")
        entry = await cache.get(key)
        if backend == "redis":
            async with redis_server.client() as redis:
                store_ttl_ms = await redis.pttl(f"woolly:{key}")

    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(refused) == {"options.cache_ttl": "is above the server's maximum of 86,400 s"}
    assert refused_entry is None
    assert entry is not None
    assert entry.expires_at - entry.created_at == pytest.approx(MAX_TTL.total_seconds())
    if backend == "redis":
        assert 0 < store_ttl_ms <= MAX_TTL.total_seconds() * 1000


async def test_a_stored_result_never_outlives_the_maximum() -> None:
    # A retried run's request passed the maximum of its day; a lower one applies now.
    cache = ResultCache(
        MemoryStore(), model="m", default_ttl_s=60, max_ttl_s=120, metrics=Metrics()
    )
    await cache.put("k", [b"x"], ttl_s=10_000)
    entry = await cache.get("k")

    assert entry is not None
    assert entry.expires_at - entry.created_at == pytest.approx(120)


async def test_replays_beyond_their_limit_are_refused_and_counted(settings: Settings) -> None:
    """Streams of stored events hold a replay slot while they last: one WatchRun following a
    live run holds the only slot, a second is RESOURCE_EXHAUSTED, and once the first ends a
    third is served (the run limit is not what refused it: the run had room)."""
    gate = Gate()
    one = settings.model_copy(update={"max_concurrent_replays": 1})
    async with running_server(one, model=FunctionModel(stream_function=gate.stream)) as srv:
        call = srv.stub.StreamExecute(stream_request("watched"), timeout=30)
        run_id = (await read(call)).run_id

        def watch() -> Any:
            return srv.stub.WatchRun(agent_service_pb2.WatchRunRequest(run_id=run_id), timeout=30)

        first = watch()
        await read(first)
        refused = await rpc_error(read_rest(watch()))
        gate.open.set()
        await read_rest(first)
        third = await read_rest(watch())
        counted = srv.app.metrics.registry.get_sample_value(
            "overload_refusals_total", {"limit": "replays"}
        )

    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "replaying its maximum of 1 streams" in details(refused)
    assert third[-1].WhichOneof("event") == "completed"
    assert counted == 1
