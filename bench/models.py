"""Test models the benchmark servers run: no network; output and timing are set by the query.

Woolly (`bench.serve_child --scripted`) and the FastAPI peer (`bench.peers.fastapi_sse`) serve the
same `scripted_model`, so a comparison of the two measures the serving layer, not the agent.

A query may carry one directive, `[bench chunks=N interval_ms=M think_ms=T]`: wait T ms, then
stream N text chunks M ms apart. Without it the model streams `DEFAULT_CHUNKS` chunks at once.
Every chunk is about `CHUNK_CHARS` characters, so the default answer is close in size to the
local engine's summary of the fixture repository.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

from pydantic_ai.messages import ModelMessage, ModelRequest, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

DEFAULT_CHUNKS = 24
CHUNK_CHARS = 80
_DIRECTIVE = re.compile(r"\[bench((?:\s+\w+=\d+(?:\.\d+)?)*)\s*\]")


def directive(chunks: int, *, interval_ms: float = 0, think_ms: float = 0) -> str:
    """The query text that asks the scripted model for this output."""
    return f"[bench chunks={chunks} interval_ms={interval_ms:g} think_ms={think_ms:g}]"


def _parse(messages: list[ModelMessage]) -> dict[str, float]:
    for message in messages:
        if not isinstance(message, ModelRequest):
            continue
        for part in message.parts:
            if isinstance(part, UserPromptPart) and isinstance(part.content, str):
                if found := _DIRECTIVE.search(part.content):
                    pairs = (item.split("=") for item in found.group(1).split())
                    return {name: float(value) for name, value in pairs}
    return {}


def _count_call(calls_file: Path | None) -> None:
    if calls_file is not None:
        # One byte per model call; O_APPEND keeps concurrent writers from overwriting each other.
        fd = os.open(calls_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, b".")
        finally:
            os.close(fd)


def scripted_model(calls_file: Path | None = None) -> FunctionModel:
    """The model the query's directive scripts; appends a byte to `calls_file` per call."""

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        _count_call(calls_file)
        script = _parse(messages)
        if think_ms := script.get("think_ms", 0):
            await asyncio.sleep(think_ms / 1e3)
        interval_s = script.get("interval_ms", 0) / 1e3
        for index in range(int(script.get("chunks", DEFAULT_CHUNKS))):
            if index and interval_s:
                await asyncio.sleep(interval_s)
            yield f"chunk {index:04d} ".ljust(CHUNK_CHARS, "-") + "\n"

    return FunctionModel(stream_function=stream, model_name="scripted")


def calls_in(calls_file: Path) -> int:
    """How many model calls `scripted_model(calls_file)` has counted."""
    return calls_file.stat().st_size if calls_file.exists() else 0


def slow_model(delay_s: float) -> FunctionModel:
    """A model that thinks for `delay_s`, then streams a short answer."""

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        await asyncio.sleep(delay_s)
        yield "A small calculator: "
        yield "add, subtract, multiply, divide."

    return FunctionModel(stream_function=stream)
