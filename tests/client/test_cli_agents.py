"""`woolly-grpc agents …`, run as a real subprocess against the session's server."""

from __future__ import annotations

import json

from tests.saved_agents.helpers import unique
from tests.support.cli import run_cli
from woolly_grpc.testing import RunningServer


async def agents_cli(server: RunningServer, *args: str) -> tuple[int, str, str]:
    return await run_cli("--target", server.target, "agents", *args)


async def test_create_get_update_list_delete(server: RunningServer) -> None:
    name = unique("cli")
    code, out, err = await agents_cli(
        server,
        *("create", name, "chat_assistant", "--tools", "read_file,search_code"),
        *("--repository", "calculator", "--system-prompt", "Cite lines.", "--json"),
    )
    assert code == 0, err
    created = json.loads(out)
    assert created["base_type"] == "AGENT_TYPE_CHAT_ASSISTANT"
    assert created["tools"] == ["read_file", "search_code"] and created["revision"] == "1"

    code, out, _ = await agents_cli(server, "update", created["id"], "--tools", "", "--inactive")
    assert code == 0
    assert "tools        (all)" in out and "active       no" in out and "revision     2" in out
    assert f"name         {name}" in out and "Cite lines." in out, "fields not given are kept"

    code, out, _ = await run_cli(  # connection options after the action work too
        *("agents", "list", "--repository", "calculator", "--page-size", "2"),
        *("--target", server.target),
    )
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith(created["id"]))
    assert name in line and "inactive" in line and "r2" in line

    code, out, _ = await agents_cli(server, "delete", created["id"])
    assert code == 0 and created["id"] in out
    code, _, err = await agents_cli(server, "get", created["id"])
    assert code == 1 and "NOT_FOUND" in err


async def test_cli_errors(server: RunningServer) -> None:
    code, _, err = await agents_cli(server, "create", "x", "summarizer", "--tools", "rm")
    assert code == 1
    assert "INVALID_ARGUMENT" in err and "agent.tools: names unknown tools 'rm'" in err

    code, _, err = await agents_cli(server, "update", "some-id")
    assert code == 2 and "give at least one field to change" in err


async def test_a_saved_agents_id_runs_wherever_a_type_goes(server: RunningServer) -> None:
    code, out, err = await agents_cli(
        server, "create", unique("cli-run"), "summarizer", "--json", "--model", "local"
    )
    assert code == 0, err
    agent_id = json.loads(out)["id"]

    executed = await run_cli(
        "execute", "calculator", agent_id, "what is it?", "--target", server.target
    )
    chained = await run_cli(
        "chain", "calculator", f"{agent_id},tester", "review", "--target", server.target
    )
    wrong = await run_cli("execute", "calculator", "summariser", "typo", "--target", server.target)

    assert executed[0] == 0 and "In short" in executed[1], executed[2]
    assert chained[0] == 0 and "── step 1: tester ──" in chained[1], chained[2]
    assert wrong[0] == 2 and "neither an agent type" in wrong[2]
