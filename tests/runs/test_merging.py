"""Merged text deltas (contract §1): a reader behind a run gets the deltas that piled up as one
message, never by waiting; one that keeps up gets each as it happens; WatchRun resumes exactly
after any sequence, inside a merged message's range too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tests.helpers import assert_sequences, read, read_rest, streamed_text, type_value
from woolly_grpc._gen.woolly.v1 import agent_service_pb2
from woolly_grpc.config import Settings
from woolly_grpc.testing import running_server

CHUNKS = [f"c{i} " for i in range(20)]


def stream_request(query: str) -> agent_service_pb2.StreamExecuteRequest:
    return agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator", agent_type=type_value("summarizer"), user_query=query
    )


class Paced:
    """A model that streams the first half of CHUNKS at once, then one chunk per `step`."""

    def __init__(self) -> None:
        self.step = asyncio.Semaphore(0)

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        half = len(CHUNKS) // 2
        for chunk in CHUNKS[:half]:
            yield chunk
        for chunk in CHUNKS[half:]:
            await self.step.acquire()
            yield chunk


async def test_a_reader_that_keeps_up_gets_each_delta_and_a_late_one_gets_them_merged(
    settings: Settings,
) -> None:
    model = Paced()
    async with running_server(settings, model=FunctionModel(stream_function=model.stream)) as srv:
        call = srv.stub.StreamExecute(stream_request("paced"), timeout=30)
        started = await read(call)
        # The first half came at once: by the time the relay wrote one, others were waiting.
        early = [await read(call)]
        while streamed_text(early) != "".join(CHUNKS[:10]):
            early.append(await read(call))
        # A watcher arriving now is behind by ten deltas: it gets them as one message.
        late = srv.stub.WatchRun(
            agent_service_pb2.WatchRunRequest(run_id=started.run_id, after_sequence=1)
        )
        caught_up = await read(late)
        # From here each chunk is released only after both readers have the one before.
        lockstep = []
        for _ in CHUNKS[10:]:
            model.step.release()
            lockstep.append(await read(call))
            await read(late)
        rest = await read_rest(call)
        await read_rest(late)

    assert caught_up.text_delta.text == "".join(CHUNKS[:10])
    assert caught_up.sequence == 11  # the last delta it holds
    assert [m.text_delta.text for m in lockstep] == CHUNKS[10:]  # one message per delta
    assert [m.sequence for m in lockstep] == list(range(12, 22))
    messages = [started, *early, *lockstep, *rest]
    assert_sequences(messages)
    assert streamed_text(messages) == rest[-1].completed.result.content == "".join(CHUNKS)


async def test_watch_resumes_inside_a_merged_range_with_the_rest_of_its_text(
    settings: Settings,
) -> None:
    model = Paced()
    async with running_server(settings, model=FunctionModel(stream_function=model.stream)) as srv:
        call = srv.stub.StreamExecute(stream_request("resume"), timeout=30)
        run_id = (await read(call)).run_id
        for _ in CHUNKS[10:]:
            model.step.release()
        await read_rest(call)

        async def watch(after: int) -> list[agent_service_pb2.WatchRunResponse]:
            request = agent_service_pb2.WatchRunRequest(run_id=run_id, after_sequence=after)
            return [m async for m in srv.stub.WatchRun(request, timeout=10)]

        whole = await watch(0)
        from_five = await watch(5)  # inside the merged range of deltas 2..21

    assert [m.WhichOneof("event") for m in whole] == ["started", "text_delta", "completed"]
    assert whole[1].sequence == 21 and whole[1].text_delta.text == "".join(CHUNKS)
    assert [m.WhichOneof("event") for m in from_five] == ["text_delta", "completed"]
    assert from_five[0].text_delta.text == "".join(CHUNKS[4:])  # deltas 6.. are chunks 4..
    assert from_five[0].sequence == 21
