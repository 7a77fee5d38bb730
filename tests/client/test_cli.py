"""The `woolly-grpc` console script, run as a real subprocess."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

from grpc import aio
from grpc_health.v1 import health_pb2

from tests.helpers import health_stub
from tests.support.cli import CLI, run_cli
from woolly_grpc.testing import RunningServer


async def test_types(server: RunningServer) -> None:
    code, out, _ = await run_cli("--target", server.target, "types")

    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == [
        "simplifier",
        "tester",
        "convo_starter",
        "summarizer",
        "documentation",
        "chat_assistant",
    ]


async def test_stream_prints_the_answer_and_tools(server: RunningServer) -> None:
    code, out, err = await run_cli(
        "--target", server.target, "stream", "calculator", "chat_assistant", "where is divide?"
    )

    assert code == 0, err
    assert "calculator/core.py:26" in out
    assert "[tool] search_code(" in err
    assert re.search(r"\[run [0-9a-f]{32} done\]", err)


async def test_execute_json_and_chain(server: RunningServer) -> None:
    code, out, _ = await run_cli(
        "--target", server.target, "execute", "calculator", "simplifier", "simplify", "--json"
    )
    assert code == 0 and '"suggestions_table"' in out

    code, out, err = await run_cli(
        "--target", server.target, "chain", "calculator", "summarizer,tester", "review"
    )
    assert code == 0, err
    assert "── step 0: summarizer ──" in out and "── step 1: tester ──" in out, "headers on stdout"
    assert out.index("── step 1") < out.index("Building on step 0 (summarizer)")


async def test_cache_and_detach_options(server: RunningServer) -> None:
    command = ("execute", "calculator", "summarizer", "never asked before", "--target")
    code, _, err = await run_cli(*command, server.target, "--cache", "only-if-cached")
    assert code == 1 and "NOT_FOUND" in err and "no cached result" in err

    code, out, err = await run_cli(*command, server.target, "--detach", "--cache", "bypass")
    assert code == 0 and "In short" in out, err


async def test_errors_exit_non_zero_with_the_grpc_status(server: RunningServer) -> None:
    code, _, err = await run_cli("--target", server.target, "execute", "nope", "summarizer", "q")
    assert code == 1
    assert "NOT_FOUND" in err

    code, _, err = await run_cli("--target", server.target, "execute", "calculator", "tester", "")
    assert code == 1
    assert "INVALID_ARGUMENT" in err and "user_query: must not be empty" in err

    code, _, err = await run_cli("--target", server.target, "execute", "calculator", "poet", "q")
    assert code == 2
    assert "'poet' is neither an agent type (simplifier, tester" in err


async def test_bad_settings_stop_start_up_with_one_line() -> None:
    code, _, err = await run_cli("serve", "--port", "99999")
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "WOOLLY_PORT" in err and "65535" in err

    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    code, _, err = await run_cli("serve", "--model", "openai:gpt-4o-mini", env=env)
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "cannot use model 'openai:gpt-4o-mini'" in err and "OPENAI_API_KEY" in err


async def test_serve_starts_and_stops_on_sigterm(repos_root: Path, tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "serve",
        "--database-url",
        f"sqlite:///{tmp_path / 'woolly.db'}",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--repos-root",
        str(repos_root),
        "--shutdown-grace-s",
        "2",
        "--metrics-port",
        "0",
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        port = None
        while port is None:
            line = (await asyncio.wait_for(process.stderr.readline(), timeout=30)).decode()
            assert line, "serve exited before it was serving"
            if found := re.search(r"serving .* on 127\.0\.0\.1:(\d+)", line):
                port = int(found.group(1))
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_stub(channel)
            response = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING

        process.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(process.stderr.read(), timeout=30)).decode()
        assert await process.wait() == 0
        assert "shutting down" in rest and "stopped" in rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
