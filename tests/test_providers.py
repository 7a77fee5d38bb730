"""A real model provider over its real wire protocol: the OpenAI Chat Completions API on loopback.

The service runs pydantic-ai's own OpenAI model (the OpenAI SDK, HTTP, SSE) against
`tests/support/openai_server.py`; what that server answers is set by `!words` in each query. No
model is faked in-process here: every success and failure crosses a socket.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pydantic_ai.models
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status
from pydantic_ai.providers.openai import OpenAIProvider

from tests.helpers import (
    assert_eventually,
    details,
    event_kinds,
    free_port,
    read,
    read_rest,
    scrape_metrics,
    type_value,
)
from tests.support.cli import CLI, run_cli
from tests.support.openai_server import OpenAIServer, running_openai_server
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2, run_pb2
from woolly_grpc.api import CACHE_TRAILER
from woolly_grpc.client import WoollyClient
from woolly_grpc.config import Settings
from woolly_grpc.testing import RunningServer, running_server

S = grpc.StatusCode
MODEL = "openai-chat:gpt-test"


def provider(url: str) -> Any:
    """Every provider the service asks for talks to `url` (as OPENAI_BASE_URL would say)."""
    return lambda _name: OpenAIProvider(base_url=url, api_key="sk-test-key")


@pytest.fixture(scope="module", autouse=True)
def loopback_model_requests() -> Iterator[None]:
    """conftest forbids model requests so that no test reaches a real provider; this module's
    reach only loopback servers, through the providers `provider()` builds."""
    pydantic_ai.models.ALLOW_MODEL_REQUESTS = True
    try:
        yield
    finally:
        pydantic_ai.models.ALLOW_MODEL_REQUESTS = False


@pytest.fixture(scope="module")
async def openai() -> AsyncIterator[OpenAIServer]:
    async with running_openai_server() as server:
        yield server


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
async def served(
    settings: Settings, openai: OpenAIServer, metrics_port: int
) -> AsyncIterator[RunningServer]:
    """The service on the provider: two retries, at most 1 s of wait each."""
    update = {
        "model": MODEL,
        "model_retries": 2,
        "model_retry_max_wait_s": 1.0,
        "metrics_port": metrics_port,
    }
    async with running_server(
        settings.model_copy(update=update), provider_factory=provider(openai.url)
    ) as srv:
        yield srv


def words(*directives: str) -> tuple[str, str]:
    """A query with these `!words` and a fresh `!id`, and that id."""
    key = uuid.uuid4().hex[:10]
    return f"what does it do? {' '.join(directives)} !id={key}", key


def execute(query: str, agent: str = "summarizer", **options: Any):
    return agent_service_pb2.ExecuteRequest(
        repository_name="calculator",
        agent_type=type_value(agent),
        user_query=query,
        options=agent_pb2.RunOptions(**options),
    )


def stream(query: str, **options: Any):
    return agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator",
        agent_type=type_value("summarizer"),
        user_query=query,
        options=agent_pb2.RunOptions(**options),
    )


def chain(query: str):
    return agent_service_pb2.ExecuteChainRequest(
        repository_name="calculator",
        agent_chain=[type_value("summarizer"), type_value("tester")],
        user_query=query,
    )


def retry_delay(error: aio.AioRpcError) -> float | None:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            delay: duration_pb2.Duration = info.retry_delay
            return delay.ToTimedelta().total_seconds()
    return None


async def failure(call: Any) -> aio.AioRpcError:
    """The error a unary call or a whole stream ends with."""
    with pytest.raises(aio.AioRpcError) as caught:
        if hasattr(call, "read"):
            await read_rest(call)
        else:
            await call
    return caught.value


# Answers -----------------------------------------------------------------------------------


async def test_execute_streams_text_and_counts_the_providers_usage(
    served: RunningServer, openai: OpenAIServer
) -> None:
    query, key = words("!chunks=4")
    response = await served.stub.Execute(execute(query), timeout=30)

    assert response.result.content == "part 1. part 2. part 3. part 4. "
    assert response.result.model == MODEL
    usage = response.result.usage
    assert (usage.input_tokens, usage.output_tokens, usage.requests) == (12, 7, 1)
    [asked] = openai.asked(key)
    assert asked.stream and asked.body["stream_options"] == {"include_usage": True}
    assert asked.model == "gpt-test"


async def test_stream_relays_each_delta_and_reassembles_split_tool_arguments(
    served: RunningServer, openai: OpenAIServer
) -> None:
    query, key = words("!tool", "!chunks=2")
    messages = [m async for m in served.stub.StreamExecute(stream(query), timeout=30)]

    kinds = event_kinds(messages)
    assert kinds == [
        "started",
        "tool_call",
        "tool_result",
        "text_delta",
        "text_delta",
        "completed",
    ]
    call = messages[1].tool_call
    assert call.name == "list_files" and call.args_json == '{"directory":".","pattern":"*.py"}'
    assert "calculator/core.py" in messages[2].tool_result.content
    text = "".join(m.text_delta.text for m in messages if m.WhichOneof("event") == "text_delta")
    assert (
        text
        == messages[-1].completed.result.content
        == ("part 1 (after 1 tool result). part 2 (after 1 tool result). ")
    )
    assert messages[-1].completed.result.usage.requests == 2
    assert len(openai.asked(key)) == 2


async def test_chain_steps_each_ask_the_provider(
    served: RunningServer, openai: OpenAIServer
) -> None:
    query, key = words("!chunks=1")
    messages = [m async for m in served.stub.ExecuteChain(chain(query), timeout=30)]

    results = messages[-1].chain_completed.results
    assert [r.content for r in results] == ["part 1. ", "part 1. "]
    assert len(openai.asked(key)) == 2
    second = openai.asked(key)[1].body["messages"]
    prompt = next(m["content"] for m in second if m["role"] == "user")
    assert prompt.count("part 1. ") == 1, "the earlier result is sent once"


async def test_a_cache_hit_asks_the_provider_nothing(
    served: RunningServer, openai: OpenAIServer
) -> None:
    query, key = words()
    first = await served.stub.Execute(execute(query), timeout=30)
    call = served.stub.Execute(execute(query), timeout=30)
    again = await call

    assert dict(await call.trailing_metadata())[CACHE_TRAILER] == "hit"
    assert again.run_id == first.run_id and len(openai.asked(key)) == 1


async def test_twenty_concurrent_tool_using_streams(
    served: RunningServer, openai: OpenAIServer
) -> None:
    queries = [words("!tool", "!chunks=3", "!pace=0.01") for _ in range(20)]

    async def one(query: str) -> list[Any]:
        return [m async for m in served.stub.StreamExecute(stream(query), timeout=60)]

    streams = await asyncio.gather(*(one(q) for q, _ in queries))

    for messages in streams:
        kinds = event_kinds(messages)
        assert kinds[:3] == ["started", "tool_call", "tool_result"] and kinds[-1] == "completed"
        assert kinds.count("text_delta") == 3
    assert all(len(openai.asked(key)) == 2 for _, key in queries)


# Failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["Execute", "StreamExecute", "ExecuteChain"])
async def test_rate_limited_is_retried_then_unavailable_with_retry_info(
    served: RunningServer, openai: OpenAIServer, metrics_port: int, method: str
) -> None:
    before = (await scrape_metrics(metrics_port)).get(
        "agent_model_retries_total", reason="rate_limited"
    )
    query, key = words("!status=429", "!retry_after=0.05")
    request = {"Execute": execute, "StreamExecute": stream, "ExecuteChain": chain}[method](query)
    error = await failure(getattr(served.stub, method)(request, timeout=30))

    assert error.code() == S.UNAVAILABLE, details(error)
    assert "model openai-chat:gpt-test, HTTP 429" in details(error)
    assert "Rate limit reached" in details(error) and "wait 0.05 s" in details(error)
    assert retry_delay(error) == pytest.approx(0.05)
    assert len(openai.asked(key)) == 3, "the first attempt and two retries"
    after = (await scrape_metrics(metrics_port)).get(
        "agent_model_retries_total", reason="rate_limited"
    )
    assert after - before == 2


FAILURES = {
    "quota": ("!quota", S.RESOURCE_EXHAUSTED, "waiting will not help", 1),
    "server error": ("!status=500 !retry_after=0", S.UNAVAILABLE, "HTTP 500", 3),
    "malformed": ("!malformed", S.UNAVAILABLE, "could not be read", 1),
    "bad request": ("!status=400", S.FAILED_PRECONDITION, "refused the request", 1),
    "bad key": ("!status=401", S.FAILED_PRECONDITION, "credentials", 1),
    "no model": ("!status=404", S.FAILED_PRECONDITION, "no such model", 1),
    "bad tool arguments": ("!badargs", S.UNAVAILABLE, "could not be used", 3),
}
"""What the query asks the provider to do, the caller's status, a phrase of its message, and how
many requests the provider must have seen."""


@pytest.mark.parametrize("method", ["Execute", "StreamExecute", "ExecuteChain"])
@pytest.mark.parametrize("case", FAILURES)
async def test_each_failure_through_each_method(
    served: RunningServer, openai: OpenAIServer, method: str, case: str
) -> None:
    directive, code, said, requests = FAILURES[case]
    query, key = words(directive)
    request = {"Execute": execute, "StreamExecute": stream, "ExecuteChain": chain}[method](query)
    error = await failure(getattr(served.stub, method)(request, timeout=30))
    message = details(error)

    assert error.code() == code and said in message, message
    assert "sk-t" not in message and "127.0.0.1" not in message and "Consider" not in message
    assert len(openai.asked(key)) == requests, "a chain stops at its first failed step"


@pytest.mark.parametrize("method", ["StreamExecute", "ExecuteChain"])
async def test_tool_calls_through_each_streaming_method(served: RunningServer, method: str) -> None:
    query, _ = words("!tool", "!chunks=1")
    request = {"StreamExecute": stream, "ExecuteChain": chain}[method](query)
    messages = [m async for m in getattr(served.stub, method)(request, timeout=30)]

    kinds = event_kinds(messages)
    assert kinds.count("tool_call") == kinds.count("tool_result") >= 1
    assert any("after 1 tool result" in m.text_delta.text for m in messages)


async def test_a_retry_that_succeeds_is_invisible_to_the_caller(
    served: RunningServer, openai: OpenAIServer
) -> None:
    query, key = words("!status=503", "!times=1", "!retry_after=0")
    response = await served.stub.Execute(execute(query), timeout=30)

    assert response.result.content == "part 1. part 2. part 3. "
    assert [r.status for r in openai.asked(key)] == [503, 200]


async def test_a_provider_asking_to_wait_too_long_is_not_retried(
    served: RunningServer, openai: OpenAIServer
) -> None:
    query, key = words("!status=429", "!retry_after=30")
    error = await failure(served.stub.Execute(execute(query), timeout=30))

    assert error.code() == S.UNAVAILABLE and retry_delay(error) == 30
    assert len(openai.asked(key)) == 1


async def test_exhausted_quota_is_resource_exhausted_and_never_retried(
    served: RunningServer, openai: OpenAIServer
) -> None:
    query, key = words("!quota")
    error = await failure(served.stub.Execute(execute(query), timeout=30))

    assert error.code() == S.RESOURCE_EXHAUSTED
    assert "waiting will not help" in details(error) and "retry later" not in details(error)
    assert retry_delay(error) is None and len(openai.asked(key)) == 1


async def test_a_server_error_is_retried_with_backoff_then_unavailable(
    served: RunningServer, openai: OpenAIServer
) -> None:
    query, key = words("!status=500")
    error = await failure(served.stub.StreamExecute(stream(query), timeout=30))

    assert error.code() == S.UNAVAILABLE
    assert "HTTP 500" in details(error) and "The server had an error" in details(error)
    asked = openai.asked(key)
    assert len(asked) == 3
    gaps = [b.started - a.started for a, b in itertools.pairwise(asked)]
    assert all(gap >= 0.25 for gap in gaps), f"backoff between attempts: {gaps}"


async def test_a_malformed_chunk_is_unavailable(
    served: RunningServer, openai: OpenAIServer
) -> None:
    query, key = words("!malformed")
    error = await failure(served.stub.StreamExecute(stream(query), timeout=30))

    assert error.code() == S.UNAVAILABLE, details(error)
    assert "could not be read" in details(error) and "refused" not in details(error)
    assert len(openai.asked(key)) == 1, "its stream had begun: not retried"


async def test_a_connection_dropped_mid_stream_ends_unavailable_after_the_text_it_had(
    served: RunningServer, openai: OpenAIServer
) -> None:
    query, key = words("!drop")
    call = served.stub.StreamExecute(stream(query), timeout=30)
    started, text = await read(call), await read(call)
    error = await failure(call)

    assert started.WhichOneof("event") == "started"
    assert text.text_delta.text == "part 1. "
    assert error.code() == S.UNAVAILABLE and len(openai.asked(key)) == 1
    trailers = dict(error.trailing_metadata() or ())
    assert trailers.get("woolly-run-ended") == "failed", "clients must not resume it"


async def test_the_usage_of_a_failed_run_is_recorded(
    served: RunningServer, openai: OpenAIServer, metrics_port: int
) -> None:
    before = (await scrape_metrics(metrics_port)).get(
        "agent_tokens_total", agent_type="summarizer", direction="input"
    )
    query, _ = words("!tool", "!then_status=400")
    call = served.stub.StreamExecute(stream(query), timeout=30)
    run_id = (await read(call)).run_id
    assert (await failure(call)).code() == S.FAILED_PRECONDITION

    run = (await served.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=run_id))).run
    assert run.status == run_pb2.RUN_STATUS_FAILED
    assert (run.usage.input_tokens, run.usage.output_tokens) == (12, 7)
    assert run.usage.requests == 2 and run.usage.tool_calls == 1
    after = (await scrape_metrics(metrics_port)).get(
        "agent_tokens_total", agent_type="summarizer", direction="input"
    )
    assert after - before == 12


async def test_the_usage_of_a_cancelled_run_is_recorded(
    served: RunningServer, openai: OpenAIServer
) -> None:
    query, key = words("!tool", "!slow")
    call = served.stub.StreamExecute(stream(query), timeout=60)
    run_id = await slow_stream_started(served, openai, key, call)
    await read(call)  # the tool's result
    await read(call)  # text of the second request: the first one's usage is in
    await served.stub.CancelRun(agent_service_pb2.CancelRunRequest(run_id=run_id), timeout=10)
    run = (await served.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=run_id))).run

    assert run.status == run_pb2.RUN_STATUS_CANCELLED
    assert run.usage.input_tokens == 12 and run.usage.output_tokens == 7
    assert run.usage.requests == 2 and run.usage.tool_calls == 1


async def test_a_run_stopped_at_the_request_limit_counts_what_it_spent(
    settings: Settings, openai: OpenAIServer
) -> None:
    update = {"model": MODEL, "max_model_requests": 1}
    async with running_server(
        settings.model_copy(update=update), provider_factory=provider(openai.url)
    ) as srv:
        query, _ = words("!tool")
        call = srv.stub.StreamExecute(stream(query), timeout=30)
        run_id = (await read(call)).run_id
        error = await failure(call)
        run = (await srv.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=run_id))).run

    assert error.code() == S.RESOURCE_EXHAUSTED and "more than 1 model requests" in details(error)
    assert run.usage.input_tokens == 12 and run.usage.requests == 1


async def test_an_unreachable_provider_is_unavailable(settings: Settings) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    update = {"model": MODEL, "model_retries": 1, "model_retry_max_wait_s": 0.5}
    async with running_server(
        settings.model_copy(update=update), provider_factory=provider(closed)
    ) as srv:
        error = await failure(srv.stub.Execute(execute("anyone there?"), timeout=30))

    assert error.code() == S.UNAVAILABLE and "could not be reached" in details(error)
    assert "127.0.0.1" not in details(error)


async def test_the_responses_api_on_a_chat_only_server_names_openai_chat(
    settings: Settings, openai: OpenAIServer
) -> None:
    update = {"model": "openai:gpt-test"}
    async with running_server(
        settings.model_copy(update=update), provider_factory=provider(openai.url)
    ) as srv:
        error = await failure(srv.stub.Execute(execute("responses?"), timeout=30))

    assert error.code() == S.FAILED_PRECONDITION
    assert "`openai-chat:gpt-test`" in details(error)


# Stopping an upstream request --------------------------------------------------------------


async def slow_stream_started(
    served: RunningServer, openai: OpenAIServer, key: str, call: Any
) -> str:
    run_id: str = (await read(call)).run_id
    await read(call)  # the first text: the upstream stream is flowing
    await assert_eventually(lambda: bool(openai.asked(key)))
    return run_id


async def aborted_upstream_within(openai: OpenAIServer, key: str, since: float) -> float:
    await assert_eventually(lambda: openai.asked(key)[0].client_left is not None, timeout=10)
    left = openai.asked(key)[0].client_left
    assert left is not None
    return left - since


async def test_cancel_run_aborts_the_upstream_request(
    served: RunningServer, openai: OpenAIServer
) -> None:
    query, key = words("!slow")
    call = served.stub.StreamExecute(stream(query), timeout=60)
    run_id = await slow_stream_started(served, openai, key, call)

    began = time.monotonic()
    await served.stub.CancelRun(agent_service_pb2.CancelRunRequest(run_id=run_id), timeout=10)

    assert await aborted_upstream_within(openai, key, began) < 1.5
    assert (await failure(call)).code() == S.CANCELLED


async def test_a_client_going_away_aborts_the_upstream_request(
    served: RunningServer, openai: OpenAIServer
) -> None:
    query, key = words("!slow")
    call = served.stub.StreamExecute(stream(query), timeout=60)
    await slow_stream_started(served, openai, key, call)

    began = time.monotonic()
    call.cancel()

    assert await aborted_upstream_within(openai, key, began) < 1.5


async def test_a_deadline_aborts_the_upstream_request(
    served: RunningServer, openai: OpenAIServer
) -> None:
    query, key = words("!slow")
    call = served.stub.StreamExecute(stream(query), timeout=1.0)
    await slow_stream_started(served, openai, key, call)
    error = await failure(call)
    ended = time.monotonic()

    assert error.code() == S.DEADLINE_EXCEEDED
    assert await aborted_upstream_within(openai, key, ended) < 1.5


# Fallbacks ---------------------------------------------------------------------------------


async def test_a_fallback_takes_over_when_the_model_is_down(
    settings: Settings, openai: OpenAIServer
) -> None:
    openai.down.add("gpt-down")
    update = {"model": "openai-chat:gpt-down", "model_fallbacks": ("openai-chat:gpt-spare",)}
    async with running_server(
        settings.model_copy(update=update), provider_factory=provider(openai.url)
    ) as srv:
        query, key = words("!chunks=1")
        response = await srv.stub.Execute(execute(query), timeout=30)

    assert response.result.content == "part 1. "
    assert response.result.model == "openai-chat:gpt-spare", "says which model answered"
    assert [(r.model, r.status) for r in openai.asked(key)] == [
        ("gpt-down", 503),
        ("gpt-spare", 200),
    ], "no wait before the fallback"


# Our own client and CLI --------------------------------------------------------------------


async def test_the_client_raises_a_failed_runs_status_from_stream_chain_and_watch(
    served: RunningServer,
) -> None:
    query, _ = words("!status=400")
    async with WoollyClient(served.target) as client:
        with pytest.raises(aio.AioRpcError) as streamed:
            [m async for m in client.stream("calculator", "summarizer", query)]
        with pytest.raises(aio.AioRpcError) as chained:
            [m async for m in client.chain("calculator", ["summarizer"], query + " chain")]
        run_id = ""
        with pytest.raises(aio.AioRpcError):
            async for message in client.stream("calculator", "summarizer", query + " again"):
                run_id = message.run_id
        with pytest.raises(aio.AioRpcError) as watched:
            [m async for m in client.watch_run(run_id)]

    for caught in (streamed, chained, watched):
        assert caught.value.code() == S.FAILED_PRECONDITION, details(caught.value)
        assert "refused the request as configured" in details(caught.value)


# Saved agents on models of their own -------------------------------------------------------


async def test_a_saved_agent_runs_on_its_own_model_and_settings(
    settings: Settings, openai: OpenAIServer
) -> None:
    update = {"model": MODEL, "models": ("openai-chat:gpt-cheap",)}
    async with running_server(
        settings.model_copy(update=update), provider_factory=provider(openai.url)
    ) as srv:
        async with WoollyClient(srv.target) as client:
            with pytest.raises(aio.AioRpcError) as refused:
                await client.create_agent("x", "summarizer", model="openai-chat:gpt-unknown")
            agent = await client.create_agent(
                f"cheap-{uuid.uuid4().hex[:6]}",
                "summarizer",
                model="openai-chat:gpt-cheap",
                temperature=0.3,
                max_output_tokens=256,
            )
            query, key = words("!chunks=1")
            first = await client.execute("calculator", query=query, agent_id=agent.id)
            await client.update_agent(agent.id, model=MODEL)
            second = await client.execute("calculator", query=query, agent_id=agent.id)

    assert refused.value.code() == S.INVALID_ARGUMENT
    assert "agent.model" in details(refused.value) and "openai-chat:gpt-cheap" in details(
        refused.value
    )
    asked = openai.asked(key)
    assert [r.model for r in asked] == ["gpt-cheap", "gpt-test"], "the edit is never served stale"
    assert asked[0].body["temperature"] == 0.3 and asked[0].body["max_completion_tokens"] == 256
    assert first.result.model == "openai-chat:gpt-cheap" and second.result.model == MODEL
    assert not second.result.cached


async def test_the_cli_exits_non_zero_when_a_run_fails(served: RunningServer) -> None:
    query, _ = words("!status=400")
    target = ("--target", served.target)  # after the command, as people type it
    streamed = await run_cli("stream", "calculator", "summarizer", query, "--json", *target)
    chained = await run_cli("chain", "calculator", "summarizer,tester", query + " c", *target)
    run_id = json.loads(streamed[1].splitlines()[0])["run_id"]
    watched = await run_cli("run", "watch", run_id, *target)

    for code, _out, err in (streamed, chained, watched):
        assert code == 1, err
        assert "FAILED_PRECONDITION: the model provider refused the request" in err


async def test_the_cli_stops_quietly_when_its_reader_closes_the_pipe(
    served: RunningServer, openai: OpenAIServer
) -> None:
    query, key = words("!slow")
    reader, writer = os.pipe()  # what `woolly-grpc stream … | head -c 8` sets up
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *("--target", served.target, "stream", "calculator", "summarizer", query),
        stdout=writer,
        stderr=asyncio.subprocess.PIPE,
    )
    os.close(writer)
    first = await asyncio.to_thread(os.read, reader, 8)
    os.close(reader)  # `head` has its bytes and leaves
    assert process.stderr is not None
    errors = await asyncio.wait_for(process.stderr.read(), timeout=30)
    code = await asyncio.wait_for(process.wait(), timeout=30)

    assert first == b"part 1. ", "text streams as it comes"
    assert code == 141 and b"Traceback" not in errors and b"BrokenPipe" not in errors
    await assert_eventually(lambda: openai.asked(key)[0].client_left is not None, timeout=15)


async def test_status_reports_each_model_from_its_calls_and_a_probe(
    settings: Settings, openai: OpenAIServer
) -> None:
    host_port = openai.url.removeprefix("http://").removesuffix("/v1")
    with_secret = f"http://user:s3cret@{host_port}/v1"
    update = {"model": MODEL, "model_fallbacks": ("openai-chat:gpt-spare",), "model_retries": 0}
    async with running_server(
        settings.model_copy(update=update), provider_factory=provider(with_secret)
    ) as srv:
        await srv.stub.Execute(execute(words()[0]), timeout=30)
        await failure(srv.stub.Execute(execute(words("!status=400")[0]), timeout=30))
        async with WoollyClient(srv.target) as client:
            status = await client.server_status(probe_models=True)
            unprobed = await client.server_status()

    models = {m.name: m for m in status.models}
    assert set(models) == {MODEL, "openai-chat:gpt-spare"}
    main = models[MODEL]
    assert main.is_default and not models["openai-chat:gpt-spare"].is_default
    assert main.base_url.rstrip("/") == f"http://{host_port}/v1", "no credentials"
    assert "s3cret" not in str(status)
    assert main.HasField("last_success_time") and main.HasField("last_failure_time")
    assert main.last_failure == "refused"
    assert main.probe.reachable and main.probe.kind == "model"
    assert not unprobed.models[0].HasField("probe")


@pytest.mark.parametrize("body", ["!leaky", "!html"])
async def test_provider_and_proxy_text_reaches_callers_scrubbed(
    served: RunningServer, body: str
) -> None:
    query, _ = words("!status=502", body, "!retry_after=0")
    error = await failure(served.stub.Execute(execute(query), timeout=30))
    message = details(error)

    assert error.code() == S.UNAVAILABLE and "HTTP 502" in message
    for secret in ("org-Ab12", "platform.openai.com", "10.1.2.3", "10.0.0.5", "sk-proj", "gateway"):
        assert secret not in message, message
    if body == "!leaky":
        assert "Rate limit reached for gpt-test in organization <organization>" in message
    else:
        assert "no explanation given" in message and "<html>" not in message


async def test_a_probe_refused_by_the_provider_reports_a_label_not_its_words(
    settings: Settings, openai: OpenAIServer
) -> None:
    openai.models_status = 401
    try:
        async with running_server(
            settings.model_copy(update={"model": MODEL}), provider_factory=provider(openai.url)
        ) as srv:
            async with WoollyClient(srv.target) as client:
                status = await client.server_status(probe_models=True)
    finally:
        openai.models_status = 200

    probe = status.models[0].probe
    assert not probe.reachable and probe.error == "Unavailable: HTTP 401"
    assert "sk-" not in str(status)


async def test_a_watched_failure_keeps_its_status_details(served: RunningServer) -> None:
    query, _ = words("!status=429", "!retry_after=30")  # over the max wait: not retried
    call = served.stub.StreamExecute(stream(query), timeout=30)
    run_id = (await read(call)).run_id
    assert retry_delay(await failure(call)) == 30

    async with WoollyClient(served.target) as client:
        with pytest.raises(aio.AioRpcError) as caught:
            [m async for m in client.watch_run(run_id)]

    assert caught.value.code() == S.UNAVAILABLE and retry_delay(caught.value) == 30
