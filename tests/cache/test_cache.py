"""The result cache over real gRPC, with the in-memory store and a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from grpc import aio
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tests.helpers import assert_eventually, merged_view, read, read_rest, trailers, type_value
from tests.support.redis_server import CLUSTER, RedisServer, running_redis
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2, run_pb2
from woolly_grpc.api import AGE_TRAILER, CACHE_TRAILER
from woolly_grpc.config import Settings
from woolly_grpc.interceptors.caching import key_payload
from woolly_grpc.testing import RunningServer, running_server

BYPASS = agent_pb2.CACHE_POLICY_BYPASS
REFRESH = agent_pb2.CACHE_POLICY_REFRESH
ONLY_IF_CACHED = agent_pb2.CACHE_POLICY_ONLY_IF_CACHED


class CountingModel:
    """A scripted model that counts its calls and can be held at a gate."""

    def __init__(self, *, gated: bool = False) -> None:
        self.calls = 0
        self.cancelled = 0
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        self.calls += 1
        yield f"answer {self.calls}. "
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        yield "done."

    def model(self) -> FunctionModel:
        return FunctionModel(stream_function=self.stream)


@pytest.fixture(params=["memory", "redis"])
async def cache_url(request, redis_server: RedisServer) -> str:
    if request.param == "memory":
        return "memory://"
    await redis_server.flush()
    return redis_server.url


def execute_request(query: str = "what is it?", agent: str = "summarizer", **options: Any):
    return agent_service_pb2.ExecuteRequest(
        repository_name="calculator",
        agent_type=type_value(agent),
        user_query=query,
        options=agent_pb2.RunOptions(**options),
    )


def stream_request(query: str) -> agent_service_pb2.StreamExecuteRequest:
    return agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator", agent_type=type_value("summarizer"), user_query=query
    )


async def execute(
    srv: RunningServer, request
) -> tuple[agent_service_pb2.ExecuteResponse, dict[str, str]]:
    call = srv.stub.Execute(request, timeout=30)
    response = await call
    return response, await trailers(call)


@pytest.fixture
async def local(settings: Settings, cache_url: str) -> AsyncIterator[RunningServer]:
    async with running_server(settings.model_copy(update={"cache_url": cache_url})) as srv:
        yield srv


async def test_hit_after_miss(local: RunningServer) -> None:
    first, first_trailers = await execute(local, execute_request())
    second, second_trailers = await execute(local, execute_request())

    assert first_trailers[CACHE_TRAILER] == "miss" and not first.result.cached
    assert second_trailers[CACHE_TRAILER] == "hit" and second.result.cached
    assert second_trailers[AGE_TRAILER].isdigit()
    assert second.run_id == first.run_id, "a hit replays the run that produced it"
    second.result.cached = False
    assert second.result == first.result


async def test_policies(local: RunningServer) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await execute(local, execute_request("q1", cache_policy=ONLY_IF_CACHED))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    bypassed, trailers = await execute(local, execute_request("q1", cache_policy=BYPASS))
    assert trailers[CACHE_TRAILER] == "bypass"
    with pytest.raises(aio.AioRpcError):
        await execute(local, execute_request("q1", cache_policy=ONLY_IF_CACHED))

    stored, trailers = await execute(local, execute_request("q1"))
    assert trailers[CACHE_TRAILER] == "miss" and stored.run_id != bypassed.run_id
    refreshed, trailers = await execute(local, execute_request("q1", cache_policy=REFRESH))
    assert trailers[CACHE_TRAILER] == "miss" and refreshed.run_id != stored.run_id

    hit, trailers = await execute(local, execute_request("q1", cache_policy=ONLY_IF_CACHED))
    assert trailers[CACHE_TRAILER] == "hit"
    assert hit.run_id == refreshed.run_id, "REFRESH wrote its fresh result"


async def test_ttl_expiry(local: RunningServer) -> None:
    await execute(local, execute_request("short-lived", cache_ttl=timedelta(milliseconds=50)))

    async def expired() -> bool:
        try:
            await execute(local, execute_request("short-lived", cache_policy=ONLY_IF_CACHED))
        except aio.AioRpcError as error:
            return error.code() == grpc.StatusCode.NOT_FOUND
        return False

    await assert_eventually(expired)


async def test_max_age_runs_fresh_when_the_entry_is_too_old(local: RunningServer) -> None:
    first, _ = await execute(local, execute_request("aged"))

    async def fresh_run() -> bool:
        again, trailers = await execute(
            local, execute_request("aged", cache_max_age=timedelta(milliseconds=1))
        )
        return trailers[CACHE_TRAILER] == "miss" and again.run_id != first.run_id

    await assert_eventually(fresh_run)
    _, trailers = await execute(local, execute_request("aged", cache_max_age=timedelta(hours=1)))
    assert trailers[CACHE_TRAILER] == "hit"


@pytest.mark.parametrize(
    "change",
    [
        dict(user_query="another question"),
        dict(agent_type=type_value("tester")),
        dict(repository_name="empty_repo"),
        dict(context={"ticket": "CALC-9"}),
    ],
    ids=["query", "agent_type", "repository", "context"],
)
async def test_what_is_asked_is_in_the_key(local: RunningServer, change: dict[str, Any]) -> None:
    await execute(local, execute_request("keyed"))
    request = execute_request("keyed")
    for field, value in change.items():
        if field == "context":
            request.context.update(value)
        else:
            setattr(request, field, value)

    _, trailers = await execute(local, request)

    assert trailers[CACHE_TRAILER] == "miss"


async def test_an_empty_context_is_no_context(local: RunningServer) -> None:
    """grpcurl omits `context`, other clients send `{}`: one request, one entry, one bill."""
    without = execute_request("context or not")
    with_empty = execute_request("context or not")
    with_empty.context.SetInParent()
    assert with_empty.HasField("context") and not without.HasField("context")

    first, _ = await execute(local, without)
    second, trailers = await execute(local, with_empty)

    assert trailers[CACHE_TRAILER] == "hit" and second.run_id == first.run_id


async def test_options_are_not_in_the_key(local: RunningServer) -> None:
    await execute(local, execute_request("opts"))

    _, trailers = await execute(local, execute_request("opts", cache_ttl=timedelta(minutes=5)))

    assert trailers[CACHE_TRAILER] == "hit"


async def test_stream_replay_has_the_same_shape(local: RunningServer) -> None:
    request = agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator", agent_type=type_value("tester"), user_query="stream me"
    )
    original = [m async for m in local.stub.StreamExecute(request, timeout=30)]
    call = local.stub.StreamExecute(request, timeout=30)
    replay = [m async for m in call]

    assert (await trailers(call))[CACHE_TRAILER] == "hit"
    assert {m.run_id for m in replay} == {original[0].run_id}
    assert replay[-1].completed.result.cached and not original[-1].completed.result.cached
    replay[-1].completed.result.cached = False
    assert merged_view(replay) == merged_view(original)
    kinds = [m.WhichOneof("event") for m in replay]
    assert ("text_delta", "text_delta") not in set(itertools.pairwise(kinds)), "stored compact"


async def test_a_failed_call_is_not_stored(settings: Settings, cache_url: str) -> None:
    async def broken(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        yield "partial "
        raise RuntimeError("model exploded")

    update = {"cache_url": cache_url}
    model = FunctionModel(stream_function=broken)
    async with running_server(settings.model_copy(update=update), model=model) as srv:
        for _ in range(2):
            with pytest.raises(aio.AioRpcError) as caught:
                await execute(srv, execute_request("fails"))
            assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert srv.app.cache.stats.hits == 0


async def test_identical_calls_in_flight_run_the_model_once(
    settings: Settings, cache_url: str
) -> None:
    counting = CountingModel(gated=True)
    update = {"cache_url": cache_url}
    async with running_server(settings.model_copy(update=update), model=counting.model()) as srv:
        calls = [srv.stub.Execute(execute_request("together"), timeout=30) for _ in range(100)]
        await assert_eventually(lambda: srv.app.cache.stats.misses == 100)
        counting.gate.set()
        responses = await asyncio.gather(*calls)
        outcomes = [(await trailers(c))[CACHE_TRAILER] for c in calls]

    assert counting.calls == 1
    assert sorted(outcomes) == ["coalesced"] * 99 + ["miss"]
    assert len({r.run_id for r in responses}) == 1
    assert all(r.result == responses[0].result and not r.result.cached for r in responses)


async def test_one_coalesced_caller_leaving_affects_only_itself(settings: Settings) -> None:
    counting = CountingModel(gated=True)
    async with running_server(settings, model=counting.model()) as srv:
        leader = srv.stub.StreamExecute(stream_request("share"), timeout=30)
        follower = srv.stub.StreamExecute(stream_request("share"), timeout=30)
        await assert_eventually(lambda: srv.app.cache.stats.misses == 2)
        await leader.read()
        leader.cancel()
        counting.gate.set()
        rest = [m async for m in follower]

        assert rest[-1].completed.result.content == "answer 1. done."
        assert counting.calls == 1 and counting.cancelled == 0

        counting.gate.clear()
        last = srv.stub.StreamExecute(stream_request("solo"), timeout=30)
        await last.read()
        await assert_eventually(lambda: counting.calls == 2)
        last.cancel()
        await assert_eventually(lambda: counting.cancelled == 1)


async def test_corrupt_entry_is_a_miss_and_is_overwritten(local: RunningServer) -> None:
    request = execute_request("corrupt me")
    first, _ = await execute(local, request)
    key = local.app.cache.key("/woolly.v1.AgentService/Execute", key_payload(request), "")
    await local.app.cache.store.set(key, b"garbage" * 10, ttl_s=60)

    again, trailers = await execute(local, request)
    assert trailers[CACHE_TRAILER] == "miss" and again.run_id != first.run_id
    third, trailers = await execute(local, request)
    assert trailers[CACHE_TRAILER] == "hit" and third.run_id == again.run_id


async def test_chain_steps_are_cached_one_by_one(settings: Settings, cache_url: str) -> None:
    calls: list[str] = []
    fail_tester = True

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        kind = "tester" if "write tests" in (info.instructions or "") else "summarizer"
        calls.append(kind)
        if kind == "tester" and fail_tester:
            raise RuntimeError("tester broke")
        yield f"{kind} says hi"

    update = {"cache_url": cache_url}
    model_ = FunctionModel(stream_function=model)
    async with running_server(settings.model_copy(update=update), model=model_) as srv:
        request = agent_service_pb2.ExecuteChainRequest(
            repository_name="calculator",
            agent_chain=[type_value("summarizer"), type_value("tester")],
            user_query="chain me",
        )
        with pytest.raises(aio.AioRpcError):
            async for _ in srv.stub.ExecuteChain(request, timeout=30):
                pass
        fail_tester = False
        messages = [m async for m in srv.stub.ExecuteChain(request, timeout=30)]

    assert calls == ["summarizer", "tester", "tester"], "step 0 was replayed, not rerun"
    results = messages[-1].chain_completed.results
    assert results[0].cached and results[0].content == "summarizer says hi"
    assert not results[1].cached and results[1].content == "tester says hi"


class StepModel:
    """Answers as the summarizer or the tester, counting calls; the tester fails while `broken`."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.broken = False

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        kind = "tester" if "write tests" in (info.instructions or "") else "summarizer"
        self.calls.append(kind)
        if kind == "tester" and self.broken:
            raise RuntimeError("tester broke")
        yield f"{kind} #{self.calls.count(kind)}"


def chain_request(**options: Any) -> agent_service_pb2.ExecuteChainRequest:
    return agent_service_pb2.ExecuteChainRequest(
        repository_name="calculator",
        agent_chain=[type_value("summarizer"), type_value("tester")],
        user_query="steps",
        options=agent_pb2.RunOptions(**options),
    )


async def run_chain(srv: RunningServer, request) -> list[agent_pb2.AgentResult]:
    messages = [m async for m in srv.stub.ExecuteChain(request, timeout=30)]
    return list(messages[-1].chain_completed.results)


async def watch_to_end(srv: RunningServer, run_id: str) -> None:
    request = agent_service_pb2.WatchRunRequest(run_id=run_id)
    kinds = [m.WhichOneof("event") async for m in srv.stub.WatchRun(request, timeout=30)]
    assert kinds[-1] == "chain_completed", kinds


async def test_retry_run_reruns_every_step_and_writes_them_fresh(
    settings: Settings, cache_url: str
) -> None:
    """RetryRun runs fresh (no step from the cache) and leaves its steps for the next call."""
    model = StepModel()
    update = {"cache_url": cache_url}
    model_ = FunctionModel(stream_function=model.stream)
    async with running_server(settings.model_copy(update=update), model=model_) as srv:
        model.broken = True
        call = srv.stub.ExecuteChain(chain_request(), timeout=30)
        failed_run_id = (await read(call)).run_id
        with pytest.raises(aio.AioRpcError):
            await read_rest(call)
        model.broken = False

        retry = agent_service_pb2.RetryRunRequest(run_id=failed_run_id)
        await watch_to_end(srv, (await srv.stub.RetryRun(retry, timeout=30)).run.id)
        assert model.calls == ["summarizer", "tester", "summarizer", "tester"], (
            "the retry reran step 0 although the failed run had cached it"
        )

        results = await run_chain(srv, chain_request())

    assert model.calls == ["summarizer", "tester", "summarizer", "tester"], "nothing ran again"
    assert [(r.content, r.cached) for r in results] == [
        ("summarizer #2", True),
        ("tester #2", True),  # its first call was the one that failed
    ], "both steps come from what the retry wrote"


async def test_a_bypassing_run_retried_still_bypasses_the_step_cache(settings: Settings) -> None:
    model = StepModel()
    model_ = FunctionModel(stream_function=model.stream)
    async with running_server(settings, model=model_) as srv:
        first = await srv.stub.Execute(execute_request("warm the step cache"), timeout=30)
        assert first.result.content  # (an Execute does not touch chain steps)
        messages = [m async for m in srv.stub.ExecuteChain(chain_request(cache_policy=BYPASS))]
        retry = agent_service_pb2.RetryRunRequest(run_id=messages[0].run_id)
        await watch_to_end(srv, (await srv.stub.RetryRun(retry, timeout=30)).run.id)
        results = await run_chain(srv, chain_request())

    assert [r.cached for r in results] == [False, False], "neither bypassing run wrote a step"
    assert model.calls.count("summarizer") == 1 + 3, "Execute, chain, retry, chain: all ran it"


async def test_with_the_cache_off_chain_steps_are_neither_read_nor_written(
    settings: Settings,
) -> None:
    model = StepModel()
    update = {"cache_enabled": False}
    model_ = FunctionModel(stream_function=model.stream)
    async with running_server(settings.model_copy(update=update), model=model_) as srv:
        first = await run_chain(srv, chain_request())
        second = await run_chain(srv, chain_request())

    assert model.calls == ["summarizer", "tester"] * 2
    assert not any(r.cached for r in [*first, *second])
    assert [r.content for r in second] == ["summarizer #2", "tester #2"]


async def test_redis_outage_never_fails_a_call(settings: Settings) -> None:
    async with running_redis() as redis_server:
        await _outage(settings, redis_server)


async def _outage(settings: Settings, redis_server: RedisServer) -> None:
    counting = CountingModel(gated=True)
    update = {"cache_url": redis_server.url}
    async with running_server(settings.model_copy(update=update), model=counting.model()) as srv:
        _, trailers = await _gated_execute(srv, counting, "before")
        assert trailers[CACHE_TRAILER] == "miss"
        _, trailers = await execute(srv, execute_request("before"))
        assert trailers[CACHE_TRAILER] == "hit"

        in_flight = srv.stub.Execute(execute_request("during"), timeout=30)
        await assert_eventually(lambda: counting.calls == 2)
        await redis_server.kill()  # SIGKILL while the run is in flight
        counting.gate.set()
        survived = await in_flight
        assert survived.result.content.startswith("answer 2")
        for query in ("before", "after-1", "after-2"):
            response, trailers = await execute(srv, execute_request(query))
            assert trailers[CACHE_TRAILER] == "miss" and response.result.content
        assert srv.app.cache.stats.errors > 0

        await redis_server.start()

        async def caching_again() -> bool:
            await execute(srv, execute_request("after-restart"))
            _, trailers = await execute(srv, execute_request("after-restart"))
            return trailers[CACHE_TRAILER] == "hit"

        await assert_eventually(caching_again)
        run = (await srv.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=survived.run_id))).run
        assert run.status == run_pb2.RUN_STATUS_SUCCEEDED


async def _gated_execute(srv: RunningServer, counting: CountingModel, query: str):
    counting.gate.set()
    result = await execute(srv, execute_request(query))
    counting.gate.clear()
    return result


async def test_hits_misses_and_errors_are_counted(settings: Settings) -> None:
    async with running_redis() as redis_server:
        update = {"cache_url": redis_server.url}
        async with running_server(settings.model_copy(update=update)) as srv:
            registry = srv.app.metrics.registry

            def sample(name: str, **labels: str) -> float:
                return registry.get_sample_value(name, labels) or 0.0

            await execute(srv, execute_request("counted", agent="documentation"))
            await execute(srv, execute_request("counted", agent="documentation"))
            await execute(srv, execute_request("counted", agent="documentation"))
            assert sample("cache_misses_total", agent_type="documentation") == 1
            assert sample("cache_hits_total", agent_type="documentation") == 2

            await redis_server.kill()
            await execute(srv, execute_request("counted", agent="documentation"))
            assert sample("cache_errors_total", operation="read") == 1
            assert sample("cache_misses_total", agent_type="documentation") == 2


async def test_cache_can_be_turned_off(settings: Settings) -> None:
    async with running_server(settings.model_copy(update={"cache_enabled": False})) as srv:
        first, first_trailers = await execute(srv, execute_request("uncached"))
        second, _ = await execute(srv, execute_request("uncached"))

    assert CACHE_TRAILER not in first_trailers
    assert second.run_id != first.run_id and not second.result.cached


async def test_the_model_is_in_the_key(settings: Settings, redis_server: RedisServer) -> None:
    """Two replicas on one Redis share entries, unless they serve different models."""
    await redis_server.flush()
    shared = settings.model_copy(update={"cache_url": redis_server.url})
    async with running_server(shared) as first, running_server(shared) as second:
        produced, _ = await execute(first, execute_request("model-keyed"))
        replayed, trailers = await execute(second, execute_request("model-keyed"))
        assert trailers[CACHE_TRAILER] == "hit" and replayed.run_id == produced.run_id

    other_model = CountingModel().model()
    async with running_server(shared, model=other_model) as third:
        fresh, trailers = await execute(third, execute_request("model-keyed"))
    assert trailers[CACHE_TRAILER] == "miss"
    assert fresh.result.model != produced.result.model


async def _redis_gets(redis_server: RedisServer) -> int:
    """GET commands redis-server has answered since it started."""
    async with redis_server.client() as client:
        stats = await client.info("commandstats")
    if CLUSTER:  # one entry per node
        return sum(int(node.get("cmdstat_get", {}).get("calls", 0)) for node in stats.values())
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


@contextlib.asynccontextmanager
async def _two_replicas(
    settings: Settings, redis_server: RedisServer, local_ttl_s: float
) -> AsyncIterator[tuple[RunningServer, RunningServer]]:
    """Two servers on one (emptied) Redis, each keeping hot entries for `local_ttl_s`."""
    await redis_server.flush()
    update = {"cache_url": redis_server.url, "cache_hot_ttl_s": local_ttl_s}
    shared = settings.model_copy(update=update)
    async with running_server(shared) as first, running_server(shared) as second:
        yield first, second


async def test_hot_entries_are_answered_without_a_redis_round_trip(
    settings: Settings, redis_server: RedisServer
) -> None:
    async with _two_replicas(settings, redis_server, 60.0) as (first, second):
        produced, _ = await execute(first, execute_request("hot"))
        await execute(second, execute_request("hot"))  # the second replica reads Redis once
        gets = await _redis_gets(redis_server)
        for _ in range(20):
            replayed, trailers = await execute(second, execute_request("hot"))
            assert trailers[CACHE_TRAILER] == "hit" and replayed.run_id == produced.run_id
        assert await _redis_gets(redis_server) == gets, "hits on a hot key asked Redis"

        refreshed, _ = await execute(first, execute_request("hot", cache_policy=REFRESH))
        mine, _ = await execute(first, execute_request("hot"))
        assert mine.run_id == refreshed.run_id != produced.run_id, "a replica sees its own write"
        theirs, _ = await execute(second, execute_request("hot"))
        assert theirs.run_id == produced.run_id, "the other replica's copy lags by its TTL"


async def test_a_refresh_elsewhere_shows_up_once_the_hot_copy_expires(
    settings: Settings, redis_server: RedisServer
) -> None:
    async with _two_replicas(settings, redis_server, 0.05) as (first, second):
        await execute(first, execute_request("refreshed elsewhere"))
        await execute(second, execute_request("refreshed elsewhere"))
        refreshed, _ = await execute(
            first, execute_request("refreshed elsewhere", cache_policy=REFRESH)
        )

        async def second_sees_it() -> bool:
            response, _ = await execute(second, execute_request("refreshed elsewhere"))
            return response.run_id == refreshed.run_id

        await assert_eventually(second_sees_it)


async def test_the_hot_copy_never_outlives_a_shorter_cache_ttl(
    settings: Settings, redis_server: RedisServer
) -> None:
    await redis_server.flush()
    update = {"cache_url": redis_server.url, "cache_hot_ttl_s": 60.0}
    async with running_server(settings.model_copy(update=update)) as srv:
        short = timedelta(milliseconds=50)
        await execute(srv, execute_request("short-lived hot", cache_ttl=short))

        async def expired() -> bool:
            request = execute_request("short-lived hot", cache_policy=ONLY_IF_CACHED)
            try:
                await execute(srv, request)
            except aio.AioRpcError as error:
                return error.code() == grpc.StatusCode.NOT_FOUND
            return False

        await assert_eventually(expired)
