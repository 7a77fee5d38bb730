"""Scripted models for tests (the only fake): FunctionModel stream functions with controls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo


class Gate:
    """A model that streams one chunk, then waits for the test to open the gate."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.calls = 0
        self.cancelled = asyncio.Event()

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        self.calls += 1
        yield "part one. "
        try:
            await self.open.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        yield "part two."
