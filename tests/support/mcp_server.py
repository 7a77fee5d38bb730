"""A real MCP server (streamable HTTP on loopback) standing in for Woolly's code-tools server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import uvicorn
from mcp.server.mcpserver import MCPServer

from tests.helpers import assert_eventually


@dataclass
class CodeToolsServer:
    url: str
    calls: list[tuple[str, dict[str, object]]] = field(default_factory=list)


@asynccontextmanager
async def code_tools_server(port: int = 0) -> AsyncIterator[CodeToolsServer]:
    """Serve `search_code` and `find_entities` over an index of its own; record every call.

    Args:
        port: Where to listen (0: a free port); a fixed one lets a test restart the server.
    """
    mcp = MCPServer("code-tools")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    running = CodeToolsServer(url=f"http://127.0.0.1:{sock.getsockname()[1]}/mcp")

    @mcp.tool()
    def search_code(query: str, directory: str = ".", max_results: int = 50) -> list[str]:
        """Search the indexed code for a literal string; returns `path:line: text` hits."""
        running.calls.append(("search_code", {"query": query, "directory": directory}))
        return [f"indexed/{query}.py:7: def {query}(a, b):"]

    @mcp.tool()
    def find_entities(name: str) -> list[dict[str, object]]:
        """Find functions and classes by name."""
        running.calls.append(("find_entities", {"name": name}))
        return [{"name": name, "kind": "function", "path": f"indexed/{name}.py", "line": 7}]

    server = uvicorn.Server(uvicorn.Config(mcp.streamable_http_app(), log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await assert_eventually(lambda: server.started)
        yield running
    finally:
        server.should_exit = True
        server.force_exit = True  # do not wait for clients' open sessions to end
        await serving
