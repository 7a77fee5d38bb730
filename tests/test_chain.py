"""ExecuteChain: sequential context passing, parallel concurrency, event shape."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import json_format
from grpc import aio
from pydantic_ai.messages import ModelMessage, ModelRequest, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tests.helpers import assert_sequences, event_kinds, type_value
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2
from woolly_grpc.config import Settings
from woolly_grpc.testing import RunningServer, running_server


def chain_request(agents: list[str], parallel: bool = False, **kw):
    return agent_service_pb2.ExecuteChainRequest(
        repository_name="calculator",
        agent_chain=[type_value(a) for a in agents],
        user_query="review this project",
        mode=agent_pb2.CHAIN_MODE_PARALLEL if parallel else agent_pb2.CHAIN_MODE_SEQUENTIAL,
        **kw,
    )


async def test_sequential_chain_shape_and_context(server: RunningServer) -> None:
    request = chain_request(["summarizer", "tester"])
    request.context.update({"team": "calc"})

    messages = [m async for m in server.stub.ExecuteChain(request, timeout=60)]

    kinds = event_kinds(messages)
    assert kinds[0] == "started" and kinds[-1] == "chain_completed"
    assert kinds.count("chain_completed") == 1
    assert_sequences(messages)
    steps = [m.step_index for m in messages if m.HasField("step_index")]
    assert steps == sorted(steps), "sequential steps do not interleave"
    assert [m.step_index for m in messages if m.WhichOneof("event") == "step_started"] == [0, 1]
    completed = [m for m in messages if m.WhichOneof("event") == "step_completed"]
    assert [m.agent_type for m in completed] == [type_value("summarizer"), type_value("tester")]
    for message in completed:
        deltas = [
            m.text_delta.text
            for m in messages
            if m.step_index == message.step_index and m.WhichOneof("event") == "text_delta"
        ]
        assert "".join(deltas) == message.step_completed.result.content

    final = messages[-1].chain_completed
    assert [r.content for r in final.results] == [
        m.step_completed.result.content for m in completed
    ]
    context = json_format.MessageToDict(final.final_context)
    assert context["team"] == "calc"
    assert context["agent_0_type"] == "summarizer" and context["agent_1_type"] == "tester"
    assert context["agent_0_result"] == final.results[0].content
    # The local engine acknowledges what it was given: step 1 saw step 0's result.
    assert "Building on step 0 (summarizer)" in final.results[1].content


async def test_a_later_step_sees_earlier_results_in_prompt_and_context(settings: Settings) -> None:
    prompts: list[str] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        request = messages[-1]
        assert isinstance(request, ModelRequest)
        prompt = next(p.content for p in request.parts if isinstance(p, UserPromptPart))
        assert isinstance(prompt, str)
        prompts.append(prompt)
        yield f"answer {len(prompts)}"

    async with running_server(settings, model=FunctionModel(stream_function=model)) as srv:
        request = chain_request(["summarizer", "tester", "documentation"])
        messages = [m async for m in srv.stub.ExecuteChain(request, timeout=30)]

    final = messages[-1].chain_completed
    assert final.results[2].content == "answer 3"
    assert "answer 1" not in prompts[0]
    third = prompts[2]
    assert "### Step 0: summarizer\nanswer 1" in third
    assert "### Step 1: tester\nanswer 2" in third
    # Each earlier result reaches the model once: under "Earlier results", not again in the
    # context JSON (the step's context still holds them, as the final context shows).
    assert third.count("answer 1") == 1 and third.count("answer 2") == 1
    assert "## Context" not in third
    assert json_format.MessageToDict(final.final_context) == {
        "agent_0_result": "answer 1",
        "agent_0_type": "summarizer",
        "agent_1_result": "answer 2",
        "agent_1_type": "tester",
        "agent_2_result": "answer 3",
        "agent_2_type": "documentation",
    }


async def test_the_callers_context_stays_in_the_prompt_beside_earlier_results(
    settings: Settings,
) -> None:
    prompts: list[str] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        request = messages[-1]
        assert isinstance(request, ModelRequest)
        prompts.append(next(str(p.content) for p in request.parts if isinstance(p, UserPromptPart)))
        yield f"answer {len(prompts)}"

    async with running_server(settings, model=FunctionModel(stream_function=model)) as srv:
        request = chain_request(["summarizer", "tester"])
        request.context.update({"ticket": "W-7"})
        [m async for m in srv.stub.ExecuteChain(request, timeout=30)]

    second = prompts[1]
    context = json.loads(second.split("## Context\n```json\n")[1].split("```")[0])
    assert context == {"ticket": "W-7"} and second.count("answer 1") == 1


async def test_parallel_steps_run_concurrently(settings: Settings) -> None:
    """Each step waits for the other to start: this finishes only if both run at once."""
    started = {"simplif": asyncio.Event(), "tests": asyncio.Event()}
    prompts: list[str] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        me = "simplif" if "simplify" in (info.instructions or "") else "tests"
        other = "tests" if me == "simplif" else "simplif"
        prompts.append(str(messages[-1]))
        started[me].set()
        await asyncio.wait_for(started[other].wait(), timeout=10)
        yield f"{me} done"

    async with running_server(settings, model=FunctionModel(stream_function=model)) as srv:
        request = chain_request(["simplifier", "tester"], parallel=True)
        messages = [m async for m in srv.stub.ExecuteChain(request, timeout=30)]

    final = messages[-1].chain_completed
    assert [r.content for r in final.results] == ["simplif done", "tests done"]
    assert all("Earlier results" not in p for p in prompts), "parallel steps see only the query"
    assert event_kinds(messages).count("step_completed") == 2


async def test_parallel_chain_with_the_local_engine(server: RunningServer) -> None:
    request = chain_request(["summarizer", "simplifier", "chat_assistant"], parallel=True)

    messages = [m async for m in server.stub.ExecuteChain(request, timeout=60)]

    final = messages[-1].chain_completed
    assert [r.agent_type for r in final.results] == [
        type_value("summarizer"),
        type_value("simplifier"),
        type_value("chat_assistant"),
    ]
    assert all("Building on step" not in r.content for r in final.results)
    assert_sequences(messages)


async def test_chain_given_as_steps(server: RunningServer) -> None:
    request = agent_service_pb2.ExecuteChainRequest(
        repository_name="calculator",
        steps=[agent_pb2.ChainStep(agent_type=type_value("summarizer"))],
        user_query="what is this?",
    )

    messages = [m async for m in server.stub.ExecuteChain(request, timeout=30)]

    assert messages[-1].chain_completed.results[0].agent_type == type_value("summarizer")


async def test_a_chains_own_results_do_not_count_against_the_callers_context_limit(
    settings: Settings,
) -> None:
    """The limit is for what callers send: four steps of results far past it still run."""
    update = {"max_context_bytes": 600}
    async with running_server(settings.model_copy(update=update)) as srv:
        steps = ["summarizer", "tester", "documentation", "simplifier"]
        request = chain_request(steps)
        request.context.update({"ticket": "W-7"})
        messages = [m async for m in srv.stub.ExecuteChain(request, timeout=60)]
        too_big = chain_request(steps)
        too_big.context.update({"notes": "x" * 700})
        with pytest.raises(aio.AioRpcError) as caught:
            [m async for m in srv.stub.ExecuteChain(too_big, timeout=60)]

    final = messages[-1].chain_completed
    assert len(final.results) == 4
    assert sum(len(r.content) for r in final.results[:3]) > 600 * 4, "the chain's own is large"
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
