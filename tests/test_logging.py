"""One structured log line per RPC, in text or JSON, with no secrets or prompts at INFO."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2

from tests.helpers import health_stub, type_value
from tests.support.cli import CLI
from woolly_grpc._gen.woolly.v1 import agent_service_pb2
from woolly_grpc._gen.woolly.v1.agent_service_pb2_grpc import AgentServiceStub
from woolly_grpc.interceptors.metrics import ACCESS_LOGGER
from woolly_grpc.testing import RunningServer

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
