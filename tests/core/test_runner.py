"""AgentRunner in-process: each saved-agent configuration runs with its own settings."""

from __future__ import annotations

import contextlib
from pathlib import Path

from pydantic_ai.models.function import FunctionModel

from tests.saved_agents.helpers import RecordingModel
from woolly_grpc.core import (
    AGENT_SPECS,
    AgentRunner,
    AgentType,
    Completed,
    RunRequest,
    SavedAgent,
    TextDelta,
)

QUERY = "What is in here?"


async def run(runner: AgentRunner, agent: SavedAgent | None = None) -> str:
    request = RunRequest("calculator", AgentType.SUMMARIZER, QUERY, saved_agent=agent)
    async with contextlib.aclosing(runner.stream(request)) as events:
        collected = [event async for event in events]
    assert isinstance(collected[-1], Completed)
    text = "".join(e.text for e in collected if isinstance(e, TextDelta))
    assert collected[-1].result.content == text
    return text


async def test_each_configuration_sees_its_own_prompt_tools_and_settings(
    repos_root: Path,
) -> None:
    recording = RecordingModel()
    runner = AgentRunner(
        model=FunctionModel(stream_function=recording.stream, model_name="recording"),
        repos_root=repos_root,
    )
    summarizer = AgentType.SUMMARIZER
    terse = SavedAgent("a1", "terse", summarizer, "Be terse.", ("read_file",), temperature=0.2)
    warm = SavedAgent("a2", "warm", summarizer, "Be terse.", ("read_file",), temperature=0.9)
    pirate = SavedAgent("a3", "pirate", summarizer, "Answer like a pirate.", max_output_tokens=99)

    for agent in (None, terse, warm, pirate, terse, None):
        await run(runner, agent)

    seen = [
        (
            sorted(t.name for t in info.function_tools),
            # max_retries is the service's own (it retries, not the SDK): the same for every run.
            {k: v for k, v in (info.model_settings or {}).items() if k != "max_retries"},
            (info.instructions or "").rsplit("\n\n", 1)[-1],
        )
        for info in recording.seen
    ]
    every_tool = sorted(t.name for t in recording.seen[0].function_tools)
    last_format_line = seen[0][2]
    assert seen == [
        (every_tool, {}, last_format_line),
        (["read_file"], {"temperature": 0.2}, "Be terse."),
        (["read_file"], {"temperature": 0.9}, "Be terse."),
        (every_tool, {"max_tokens": 99}, "Answer like a pirate."),
        (["read_file"], {"temperature": 0.2}, "Be terse."),
        (every_tool, {}, last_format_line),
    ]
    assert len(every_tool) > 1
    base = AGENT_SPECS[AgentType.SUMMARIZER].instructions
    assert all((info.instructions or "").startswith(base) for info in recording.seen)
