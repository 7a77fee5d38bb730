"""Building saved agents over gRPC, for the saved-agent tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo

from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2
from woolly_grpc.testing import RunningServer

SUMMARIZER = agent_pb2.AGENT_TYPE_SUMMARIZER
CHAT = agent_pb2.AGENT_TYPE_CHAT_ASSISTANT


def unique(prefix: str = "agent") -> str:
    """A name no other test uses (the tests of a module share its database)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def definition(**fields: Any) -> agent_pb2.AgentDefinition:
    """An AgentDefinition with a fresh name and the summarizer base unless given."""
    fields.setdefault("name", unique())
    fields.setdefault("base_type", SUMMARIZER)
    return agent_pb2.AgentDefinition(**fields)


async def create(server: RunningServer, **fields: Any) -> agent_pb2.AgentDefinition:
    request = agent_service_pb2.CreateAgentRequest(agent=definition(**fields))
    response = await server.stub.CreateAgent(request, timeout=10)
    return response.agent


async def get(server: RunningServer, agent_id: str) -> agent_pb2.AgentDefinition:
    response = await server.stub.GetAgent(
        agent_service_pb2.GetAgentRequest(id=agent_id), timeout=10
    )
    return response.agent


async def update(
    server: RunningServer, agent_id: str, *paths: str, **fields: Any
) -> agent_pb2.AgentDefinition:
    request = agent_service_pb2.UpdateAgentRequest(
        agent=agent_pb2.AgentDefinition(id=agent_id, **fields)
    )
    request.update_mask.paths.extend(paths)
    response = await server.stub.UpdateAgent(request, timeout=10)
    return response.agent


class RecordingModel:
    """Answers with the instructions and tools it was given, and remembers what it saw."""

    def __init__(self) -> None:
        self.seen: list[AgentInfo] = []

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        self.seen.append(info)
        tools = ",".join(sorted(tool.name for tool in info.function_tools))
        yield f"tools: {tools}\n"
        yield f"instructions: {info.instructions}"
