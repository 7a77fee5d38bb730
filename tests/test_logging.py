"""One structured log line per RPC, in text or JSON, with no secrets or prompts at INFO."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2

from tests.helpers import details, health_stub, type_value
from tests.support.cli import CLI
from tests.support.mcp_server import code_tools_server
from tests.support.redis_server import RedisNode, RedisServer
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2
from woolly_grpc._gen.woolly.v1.agent_service_pb2_grpc import AgentServiceStub
from woolly_grpc.config import Settings
from woolly_grpc.interceptors.metrics import ACCESS_LOGGER
from woolly_grpc.observability.logs import RedactingFilter, redacted_url
from woolly_grpc.testing import RunningServer, running_server

EXECUTE = "/woolly.v1.AgentService/Execute"


def execute_request(query: str) -> agent_service_pb2.ExecuteRequest:
    return agent_service_pb2.ExecuteRequest(
        repository_name="calculator", agent_type=type_value("summarizer"), user_query=query
    )


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = getattr(record, "fields", {})
    return fields


async def test_one_line_per_rpc_with_its_fields(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    token = f"sk-live-{uuid.uuid4().hex}"
    prompt = f"remember the phrase purple-{uuid.uuid4().hex} and summarise"
    metadata = (("authorization", f"Bearer {token}"),)
    caplog.set_level(logging.INFO)

    first = await server.stub.Execute(execute_request(prompt), metadata=metadata, timeout=30)
    await server.stub.Execute(execute_request(prompt), metadata=metadata, timeout=30)
    with pytest.raises(aio.AioRpcError):
        await server.stub.Execute(execute_request(""), timeout=30)
    await health_stub(server.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)

    lines = [fields_of(r) for r in caplog.records if r.name == ACCESS_LOGGER]
    executes = [f for f in lines if f["method"] == EXECUTE]
    assert [(f["code"], f.get("cache")) for f in executes] == [
        ("OK", "miss"),
        ("OK", "hit"),
        ("INVALID_ARGUMENT", "miss"),
    ]
    assert executes[0]["run_id"] == first.run_id
    assert "run_id" not in executes[1], "a hit runs nothing"
    assert all(f["duration_ms"] > 0 for f in executes)
    assert not [f for f in lines if "Health" in f["method"]], "probes log at DEBUG"
    text = next(r for r in caplog.records if fields_of(r) is executes[0]).getMessage()
    assert re.fullmatch(rf"rpc {EXECUTE} OK [\d.]+ ms run_id={first.run_id} cache=miss", text)
    for record in caplog.records:
        if record.levelno >= logging.INFO:
            seen = record.getMessage() + json.dumps(fields_of(record), default=str)
            assert token not in seen and "purple-" not in seen, record.name


async def test_json_lines_from_the_served_process(repos_root: Path, tmp_path: Path) -> None:
    env = os.environ | {"WOOLLY_LOG_FORMAT": "json"}
    args = ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"]
    args += ["--database-url", f"sqlite:///{tmp_path / 'agents.db'}"]
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "serve",
        *args,
        "--repos-root",
        str(repos_root),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    stderr = process.stderr

    async def next_entry() -> dict[str, Any]:
        line = await asyncio.wait_for(stderr.readline(), timeout=30)
        assert line, "serve exited early"
        entry: dict[str, Any] = json.loads(line)  # every line is one JSON object
        return entry

    try:
        port = None
        while port is None:
            entry = await next_entry()
            if found := re.search(r"serving .* on 127\.0\.0\.1:(\d+)", entry["message"]):
                port = int(found.group(1))
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            response = await AgentServiceStub(channel).Execute(
                execute_request("what is it?"), timeout=30
            )
        while (entry := await next_entry())["logger"] != ACCESS_LOGGER:
            pass
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=30)

    assert entry["level"] == "INFO"
    assert entry["method"] == EXECUTE and entry["code"] == grpc.StatusCode.OK.name
    assert entry["run_id"] == response.run_id and entry["cache"] == "miss"
    assert isinstance(entry["duration_ms"], float)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])


async def test_debug_logs_carry_no_prompts_sql_parameters_or_credentials(
    settings: Settings, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    if not isinstance(redis_server, RedisNode):
        pytest.skip("the credentials are made on one Redis node")
    prompt = f"Answer like a pirate named Quartermaster-{uuid.uuid4().hex}"
    redis_password = f"redis-pw-{uuid.uuid4().hex}"
    mcp_token = f"mcp-token-{uuid.uuid4().hex}"
    secrets = [prompt.split()[-1], redis_password, mcp_token]
    admin = redis_server.client()
    try:
        await admin.execute_command(
            "ACL", "SETUSER", "woolly", "on", f">{redis_password}", "~*", "&*", "+@all"
        )
    finally:
        await admin.aclose()
    redis_url = f"redis://woolly:{redis_password}@127.0.0.1:{redis_server.port}/0"
    caplog.set_level(logging.DEBUG)

    async with code_tools_server() as tools:
        host_and_path = tools.url.removeprefix("http://")
        mcp_url = f"http://woolly:{mcp_token}@{host_and_path}?access_token={mcp_token}"
        debug = settings.model_copy(
            update={"log_level": "DEBUG", "cache_url": redis_url, "mcp_url": mcp_url}
        )
        async with running_server(debug) as srv:
            created = await srv.stub.CreateAgent(
                agent_service_pb2.CreateAgentRequest(
                    agent=agent_pb2.AgentDefinition(
                        name=f"pirate-{uuid.uuid4().hex[:8]}",
                        base_type=agent_pb2.AGENT_TYPE_CHAT_ASSISTANT,
                        system_prompt=prompt,
                        tools=["search_code"],
                    )
                ),
                timeout=30,
            )
            request = agent_service_pb2.ExecuteRequest(
                repository_name="calculator", agent_id=created.agent.id, user_query="divide?"
            )
            response = await srv.stub.Execute(request, timeout=30)
            await srv.stub.GetAgent(agent_service_pb2.GetAgentRequest(id=created.agent.id))
            await srv.stub.GetServerStatus(agent_service_pb2.GetServerStatusRequest())

    assert tools.calls, "the run used the MCP server's tools"
    assert response.result.content
    assert any(r.levelno == logging.DEBUG for r in caplog.records), "DEBUG was on"
    leaks = [
        (record.name, text[:200])
        for record in caplog.records
        if any(secret in (text := logged_text(record)) for secret in secrets)
    ]
    assert leaks == []


async def test_a_failing_mcp_url_reaches_callers_as_a_generic_error(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    token = f"mcp-token-{uuid.uuid4().hex}"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mcp_url = f"http://woolly:{token}@127.0.0.1:{port}/mcp?access_token={token}"
    caplog.set_level(logging.DEBUG)
    async with running_server(settings.model_copy(update={"mcp_url": mcp_url})) as srv:
        with pytest.raises(aio.AioRpcError) as run_failed:
            await srv.stub.Execute(execute_request("divide?"), timeout=30)
        with_tools = agent_pb2.AgentDefinition(
            name="with-tools", base_type=agent_pb2.AGENT_TYPE_SUMMARIZER, tools=["search_code"]
        )
        with pytest.raises(aio.AioRpcError) as create_failed:
            await srv.stub.CreateAgent(
                agent_service_pb2.CreateAgentRequest(agent=with_tools), timeout=30
            )
        status = await srv.stub.GetServerStatus(agent_service_pb2.GetServerStatusRequest())

    for error in [run_failed.value, create_failed.value]:
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        said = details(error)
        assert "tool server" in said or "MCP server" in said
        assert token not in said and str(port) not in said and "http" not in said, said
    assert status.mcp.error and token not in status.mcp.error and "http" not in status.mcp.error
    logged = "\n".join(logged_text(r) for r in caplog.records)
    assert token not in logged
    assert f"127.0.0.1:{port}/mcp" in logged, "the log says which server failed"


def logged_text(record: logging.LogRecord) -> str:
    """All a handler could print of `record`: message, fields and exception."""
    text = record.getMessage() + json.dumps(fields_of(record), default=str)
    if record.exc_info:
        text += logging.Formatter().formatException(record.exc_info)
    return text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:tok@127.0.0.1:8000/mcp?access_token=tok&v=2", "http://***@127.0.0.1:8000/mcp?access_token=***&v=***"),
        ("redis://:pw@cache:6379/0", "redis://***@cache:6379/0"),
        ("https://TOKEN@[::1]:8443/p#frag", "https://***@[::1]:8443/p"),
        ("http://tools/mcp", "http://tools/mcp"),
    ],
)  # fmt: skip
def test_redacted_url(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_the_handler_filter_redacts_messages_and_tracebacks() -> None:
    try:
        raise RuntimeError("Client error '401' for url 'http://u:tok-123@tools:1/mcp?t=tok-123'")
    except RuntimeError as exc:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "at %s", ("ws://a:tok-123@h",), None
        )
        record.exc_info = (type(exc), exc, exc.__traceback__)
    RedactingFilter().filter(record)
    printed = logging.Formatter().format(record)
    assert "tok-123" not in printed
    assert "ws://***@h" in printed and "http://***@tools:1/mcp?t=***" in printed
