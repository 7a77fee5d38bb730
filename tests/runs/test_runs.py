"""Runs outlive their stream: GetRun, WatchRun replay and follow, CancelRun, RetryRun."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc import aio
from pydantic_ai.models.function import FunctionModel

from tests.helpers import (
    assert_eventually,
    assert_sequences,
    merged_view,
    read,
    read_rest,
    streamed_text,
    type_value,
)
from tests.support.cli import run_cli
from tests.support.models import Gate
from woolly_grpc._gen.woolly.v1 import agent_service_pb2, run_pb2
from woolly_grpc.config import Settings
from woolly_grpc.testing import RunningServer, running_server


def stream_request(agent: str = "summarizer"):
    return agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator", agent_type=type_value(agent), user_query="what is it?"
    )


async def test_watch_replays_a_finished_run_from_any_point(server: RunningServer) -> None:
    original = [m async for m in server.stub.StreamExecute(stream_request(), timeout=30)]
    run_id = original[0].run_id

    def watch(after: int):
        request = agent_service_pb2.WatchRunRequest(run_id=run_id, after_sequence=after)
        return server.stub.WatchRun(request, timeout=10)

    replay = [m async for m in watch(0)]
    last = replay[-1].sequence
    tails = {after: [m async for m in watch(after)] for after in (1, 3, last - 1)}

    assert merged_view(replay) == merged_view(original)
    content = original[-1].completed.result.content
    for after, tail in tails.items():
        assert_sequences(tail, after=after)
        assert tail[-1].sequence == last
        assert content.endswith(streamed_text(tail))
    assert streamed_text(tails[1]) == content  # after `started`: all of the text
    assert tails[last - 1][-1].completed.result == original[-1].completed.result


@pytest.fixture
async def gated(settings: Settings):
    gate = Gate()
    async with running_server(settings, model=FunctionModel(stream_function=gate.stream)) as srv:
        yield srv, gate


async def test_watch_follows_a_running_run_live(gated) -> None:
    srv, gate = gated
    call = srv.stub.StreamExecute(stream_request(), timeout=30)
    first = [await read(call), await read(call)]  # started, "part one."
    run_id = first[0].run_id
    assert (await srv.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=run_id))).run.status == (
        run_pb2.RUN_STATUS_RUNNING
    )

    watcher = srv.stub.WatchRun(agent_service_pb2.WatchRunRequest(run_id=run_id, after_sequence=1))
    assert (await read(watcher)).text_delta.text == "part one. "
    gate.open.set()
    rest = await read_rest(watcher)
    original_rest = await read_rest(call)

    assert [m.WhichOneof("event") for m in rest] == ["text_delta", "completed"]
    assert rest[-1].completed.result.content == "part one. part two."
    assert merged_view(rest) == merged_view(original_rest)
    assert gate.calls == 1, "watching never reruns the model"


async def test_cancel_run_stops_the_model_and_tells_everyone(gated) -> None:
    srv, gate = gated
    call = srv.stub.StreamExecute(stream_request(), timeout=30)
    run_id = (await read(call)).run_id
    await read(call)  # the model is now waiting at the gate
    watcher = srv.stub.WatchRun(agent_service_pb2.WatchRunRequest(run_id=run_id))

    run = (await srv.stub.CancelRun(agent_service_pb2.CancelRunRequest(run_id=run_id))).run

    assert gate.cancelled.is_set()
    assert run.status == run_pb2.RUN_STATUS_CANCELLED
    assert run.cancel_reason == run_pb2.CANCEL_REASON_EXPLICIT
    assert run.partial_content == "part one. "
    with pytest.raises(aio.AioRpcError) as caught:
        await read_rest(call)
    assert caught.value.code() == grpc.StatusCode.CANCELLED
    events = await read_rest(watcher)
    assert events[-1].cancelled.reason == run_pb2.CANCEL_REASON_EXPLICIT


async def test_retry_starts_a_new_run_with_the_same_request(server: RunningServer) -> None:
    original = await server.stub.Execute(
        agent_service_pb2.ExecuteRequest(
            repository_name="calculator", agent_type=type_value("tester"), user_query="tests?"
        ),
        timeout=30,
    )

    retried = (
        await server.stub.RetryRun(agent_service_pb2.RetryRunRequest(run_id=original.run_id))
    ).run
    events = [
        m async for m in server.stub.WatchRun(agent_service_pb2.WatchRunRequest(run_id=retried.id))
    ]

    assert retried.id != original.run_id and retried.method == "Execute"
    assert events[-1].completed.result.content == original.result.content


@pytest.fixture(params=["memory", "redis"])
async def store_url(request, redis_server) -> str:
    if request.param == "memory":
        return "memory://"
    await redis_server.flush()
    return str(redis_server.url)


async def test_resume_after_the_client_dropped_its_stream(settings: Settings, store_url) -> None:
    gate = Gate()
    patient = settings.model_copy(update={"orphan_grace_s": 30, "cache_url": store_url})
    async with running_server(patient, model=FunctionModel(stream_function=gate.stream)) as srv:
        call = srv.stub.StreamExecute(stream_request(), timeout=30)
        seen = [await read(call), await read(call)]
        call.cancel()  # the client's connection drops mid-run

        watcher = srv.stub.WatchRun(
            agent_service_pb2.WatchRunRequest(run_id=seen[0].run_id, after_sequence=2)
        )
        gate.open.set()
        tail = [m async for m in watcher]
        replay = [
            m
            async for m in srv.stub.WatchRun(
                agent_service_pb2.WatchRunRequest(run_id=seen[0].run_id)
            )
        ]

    assert gate.calls == 1, "resuming never reruns the agent"
    assert_sequences(tail, after=2)  # exactly after what the client had: nothing twice
    assert merged_view(replay) == merged_view(seen + tail)
    assert tail[-1].completed.result.content == "part one. part two."


async def test_orphaned_run_is_cancelled_after_the_grace(settings: Settings) -> None:
    gate = Gate()
    short = settings.model_copy(update={"orphan_grace_s": 0.2})
    async with running_server(short, model=FunctionModel(stream_function=gate.stream)) as srv:
        call = srv.stub.StreamExecute(stream_request(), timeout=30)
        run_id = (await read(call)).run_id
        await read(call)
        call.cancel()

        await asyncio.wait_for(gate.cancelled.wait(), timeout=10)
        run = (await srv.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=run_id))).run

    assert run.status == run_pb2.RUN_STATUS_CANCELLED
    assert run.cancel_reason == run_pb2.CANCEL_REASON_CLIENT


async def test_a_watcher_within_the_grace_keeps_the_run_alive(settings: Settings) -> None:
    gate = Gate()
    patient = settings.model_copy(update={"orphan_grace_s": 30})
    async with running_server(patient, model=FunctionModel(stream_function=gate.stream)) as srv:
        call = srv.stub.StreamExecute(stream_request(), timeout=30)
        run_id = (await read(call)).run_id
        await read(call)
        watcher = srv.stub.WatchRun(agent_service_pb2.WatchRunRequest(run_id=run_id))
        await read(watcher)  # attached
        call.cancel()
        gate.open.set()
        events = await read_rest(watcher)

    assert events[-1].completed.result.content == "part one. part two."
    assert not gate.cancelled.is_set()


async def test_detached_run_goes_on_without_anyone(settings: Settings) -> None:
    gate = Gate()
    async with running_server(settings, model=FunctionModel(stream_function=gate.stream)) as srv:
        request = stream_request()
        request.options.detach = True
        call = srv.stub.StreamExecute(request, timeout=30)
        run_id = (await read(call)).run_id
        await read(call)
        call.cancel()  # orphan grace is 0 in these tests: without detach it would stop now
        gate.open.set()

        async def succeeded() -> bool:
            run = (await srv.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=run_id))).run
            return run.status == run_pb2.RUN_STATUS_SUCCEEDED

        await assert_eventually(succeeded)
    assert not gate.cancelled.is_set()


async def test_deadline_cancels_the_model(gated) -> None:
    srv, gate = gated
    call = srv.stub.StreamExecute(stream_request(), timeout=0.5)
    run_id = (await read(call)).run_id

    with pytest.raises(aio.AioRpcError) as caught:
        await read_rest(call)

    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(gate.cancelled.wait(), timeout=10)

    async def cancelled() -> bool:
        run = (await srv.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=run_id))).run
        return bool(run.status == run_pb2.RUN_STATUS_CANCELLED)

    await assert_eventually(cancelled)
    run = (await srv.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=run_id))).run
    assert run.cancel_reason == run_pb2.CANCEL_REASON_DEADLINE


@pytest.mark.parametrize("method", ["WatchRun", "CancelRun", "RetryRun"])
async def test_unknown_run_is_not_found(server: RunningServer, method: str) -> None:
    request_type = getattr(agent_service_pb2, f"{method}Request")
    with pytest.raises(aio.AioRpcError) as caught:
        call = getattr(server.stub, method)(request_type(run_id="no-such-run"), timeout=10)
        if method == "WatchRun":
            await read_rest(call)
        else:
            await call
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_chain_runs_record_every_step(server: RunningServer) -> None:
    request = agent_service_pb2.ExecuteChainRequest(
        repository_name="calculator",
        agent_chain=[type_value("summarizer"), type_value("documentation")],
        user_query="document the run record",
    )
    messages = [m async for m in server.stub.ExecuteChain(request, timeout=30)]

    run_request = agent_service_pb2.GetRunRequest(run_id=messages[0].run_id)
    run = (await server.stub.GetRun(run_request)).run
    assert run.method == "ExecuteChain"
    assert list(run.results) == list(messages[-1].chain_completed.results)
    assert run.final_context == messages[-1].chain_completed.final_context


async def test_cli_run_commands(server: RunningServer) -> None:
    response = await server.stub.Execute(
        agent_service_pb2.ExecuteRequest(
            repository_name="calculator", agent_type=type_value("summarizer"), user_query="cli run"
        ),
        timeout=30,
    )

    code, out, _ = await run_cli("--target", server.target, "run", "get", response.run_id)
    assert code == 0 and '"status": "RUN_STATUS_SUCCEEDED"' in out
    code, out, err = await run_cli("--target", server.target, "run", "watch", response.run_id)
    assert code == 0 and out == response.result.content
    assert f"[run {response.run_id} done]" in err
    code, _, err = await run_cli("--target", server.target, "run", "cancel", "nope")
    assert code == 1 and "NOT_FOUND" in err


async def test_a_full_memory_cache_evicts_results_but_never_runs(settings: Settings) -> None:
    """With `memory://`, runs have a store of their own: results pushed out of a small cache
    leave every run readable (before, runs shared the cache's LRU and went with it)."""
    # Ended runs leave this replica's memory at once, so GetRun and WatchRun read the store.
    update = {"cache_url": "memory://?max_bytes=4096", "run_memory_max": 1, "run_memory_min_s": 0}
    small = settings.model_copy(update=update)
    async with running_server(small) as srv:

        async def execute(query: str) -> agent_service_pb2.ExecuteResponse:
            request = agent_service_pb2.ExecuteRequest(
                repository_name="calculator", agent_type=type_value("summarizer"), user_query=query
            )
            return await srv.stub.Execute(request, timeout=30)

        first = await execute("question 0")
        others = [await execute(f"question {i}") for i in range(1, 20)]
        again = await execute("question 0")
        runs = [
            (await srv.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=r.run_id))).run
            for r in [first, *others]
        ]
        replay = [
            m
            async for m in srv.stub.WatchRun(
                agent_service_pb2.WatchRunRequest(run_id=first.run_id), timeout=10
            )
        ]

    assert not again.result.cached, "the cache was meant to be too small to keep it"
    assert [run.status for run in runs] == [run_pb2.RUN_STATUS_SUCCEEDED] * 20
    assert replay[-1].completed.result.content == first.result.content
