"""With WOOLLY_MCP_URL set, agents use that MCP server's tools instead of the built-in ones."""

from __future__ import annotations

import socket

import grpc
import pytest
from grpc import aio

from tests.helpers import details, event_kinds, type_value
from tests.support.mcp_server import code_tools_server
from woolly_grpc._gen.woolly.v1 import agent_service_pb2
from woolly_grpc.config import Settings
from woolly_grpc.testing import running_server


def chat_request(query: str) -> agent_service_pb2.StreamExecuteRequest:
    return agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator",
        agent_type=type_value("chat_assistant"),
        user_query=query,
    )


async def test_agents_call_the_mcp_servers_tools(settings: Settings) -> None:
    async with code_tools_server() as tools:
        with_mcp = settings.model_copy(update={"mcp_url": tools.url})
        async with running_server(with_mcp) as srv:
            messages = [
                m
                async for m in srv.stub.StreamExecute(chat_request("where is divide?"), timeout=30)
            ]

    called = [m.tool_call.name for m in messages if m.WhichOneof("event") == "tool_call"]
    assert called and set(called) <= {"search_code", "find_entities"}
    assert ("search_code", {"query": "divide", "directory": "."}) in tools.calls
    result = messages[-1].completed.result
    assert "indexed/divide.py:7" in result.content, "the answer comes from the MCP server's index"
    assert "tool_result" in event_kinds(messages)


async def test_unreachable_mcp_server_is_unavailable(settings: Settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    async with running_server(settings.model_copy(update={"mcp_url": closed_url})) as srv:
        with pytest.raises(aio.AioRpcError) as caught:
            async for _ in srv.stub.StreamExecute(chat_request("where is divide?"), timeout=30):
                pass

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "MCP" in details(caught.value)
