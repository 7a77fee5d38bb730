"""GetServerStatus reports the server and its dependencies, and never fails when one is down."""

from __future__ import annotations

import socket
import uuid

from tests.helpers import assert_eventually, type_value
from tests.support.cli import run_cli
from tests.support.mcp_server import code_tools_server
from tests.support.redis_server import running_redis
from woolly_grpc import __version__
from woolly_grpc._gen.woolly.v1 import agent_service_pb2
from woolly_grpc.config import Settings
from woolly_grpc.core import REPOSITORY_TOOLSET
from woolly_grpc.testing import RunningServer, running_server

STATUS = agent_service_pb2.GetServerStatusRequest()


def execute_request(query: str) -> agent_service_pb2.ExecuteRequest:
    return agent_service_pb2.ExecuteRequest(
        repository_name="calculator", agent_type=type_value("summarizer"), user_query=query
    )


async def status_of(srv: RunningServer) -> agent_service_pb2.GetServerStatusResponse:
    return await srv.stub.GetServerStatus(STATUS, timeout=10)


async def test_the_fields_are_sane(settings: Settings) -> None:
    async with running_server(settings) as srv:
        query = f"status {uuid.uuid4().hex}"
        await srv.stub.Execute(execute_request(query), timeout=30)  # a miss
        await srv.stub.Execute(execute_request(query), timeout=30)  # a hit
        status = await status_of(srv)
        second = await status_of(srv)

    assert srv.app.status is not None and not srv.app.status.serving, "not once shutdown began"
    assert status.version == __version__
    assert status.uptime.ToTimedelta().total_seconds() > 0
    assert second.uptime.ToTimedelta() >= status.uptime.ToTimedelta()
    assert status.model == srv.app.cache.model
    assert status.serving
    resources = status.resources
    assert resources.process_rss_bytes > 10 << 20
    assert 0 < resources.disk_free_bytes <= resources.disk_total_bytes
    assert resources.process_cpu_percent >= 0
    assert (status.cache.kind, status.cache.configured, status.cache.reachable) == (
        "memory",
        True,
        True,
    )
    assert status.cache.error == ""
    assert status.cache_hit_ratio == 0.5
    assert not status.mcp.configured
    assert status.tool_count == len(REPOSITORY_TOOLSET.tools) > 0
    assert status.database.configured and status.database.reachable
    assert status.database.kind == "sqlite"
    assert status.active_runs == 0
    assert status.max_concurrent_runs == settings.max_concurrent_runs
    assert status.requests_by_code["OK"] == 2, "the two Executes (the status call is in flight)"
    assert second.requests_by_code["OK"] == 3


async def test_a_killed_redis_is_reported_and_calls_go_on(settings: Settings) -> None:
    async with running_redis() as redis:
        with_redis = settings.model_copy(update={"cache_url": redis.url})
        async with running_server(with_redis) as srv:
            up = await status_of(srv)
            await redis.kill()
            down = await status_of(srv)
            response = await srv.stub.Execute(execute_request(f"q {uuid.uuid4().hex}"), timeout=30)
            await redis.start()  # same port

            async def reachable_again() -> bool:
                return (await status_of(srv)).cache.reachable

            await assert_eventually(reachable_again)

    assert (up.cache.kind, up.cache.reachable, up.cache.error) == ("redis", True, "")
    assert up.cache.latency.ToTimedelta().total_seconds() > 0
    assert down.cache.kind == "redis" and down.cache.configured
    assert not down.cache.reachable
    assert down.cache.error
    assert response.result.content, "the request ran uncached"


async def test_an_unreachable_mcp_server_is_reported(settings: Settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    async with running_server(settings.model_copy(update={"mcp_url": closed_url})) as srv:
        status = await status_of(srv)

    assert status.mcp.kind == "mcp" and status.mcp.configured
    assert not status.mcp.reachable
    assert status.mcp.error
    assert status.tool_count == 0
    assert status.cache.reachable, "one dependency down does not hide the others"


async def test_probes_of_dependencies_that_hang_are_bounded(settings: Settings) -> None:
    """A port that accepts and never answers (MCP), a paused Redis: reported, not waited for."""
    async with running_redis() as redis:
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            url = f"http://127.0.0.1:{silent.getsockname()[1]}/mcp"
            hanging = settings.model_copy(update={"mcp_url": url, "cache_url": redis.url})
            async with running_server(hanging) as srv:
                redis.pause()
                try:
                    status = await srv.stub.GetServerStatus(STATUS, timeout=5)
                finally:
                    redis.resume()

    assert not status.mcp.reachable and "no answer within 0.5 s" in status.mcp.error
    assert not status.cache.reachable and status.cache.error
    assert status.serving


async def test_a_reachable_mcp_server_reports_its_tools(settings: Settings) -> None:
    async with code_tools_server() as tools:
        async with running_server(settings.model_copy(update={"mcp_url": tools.url})) as srv:
            status = await status_of(srv)

    assert status.mcp.configured and status.mcp.reachable
    assert status.mcp.error == ""
    assert status.tool_count == 2  # search_code and find_entities


async def test_cli_prints_it(server: RunningServer) -> None:
    code, out, err = await run_cli("--target", server.target, "status")

    assert code == 0, err
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["version"] == __version__
    assert lines["serving"] == "yes"
    assert lines["cache"].startswith("memory reachable (")
    assert lines["mcp"] == f"not configured; {len(REPOSITORY_TOOLSET.tools)} tools (built-in)"
    assert lines["database"].startswith("sqlite reachable (")
    assert lines["runs"].endswith(f"of {server.app.settings.max_concurrent_runs}")
    assert "GiB free of" in lines["disk"]

    code, out, _ = await run_cli("--target", server.target, "status", "--json")
    assert code == 0 and '"requests_by_code"' in out
