"""The repository tools under abuse, through the server: a model asks for every secret and every
way out of the repository; nothing leaks, every bad argument is a tool error, no run fails."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai.messages import ModelMessage, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from tests.helpers import type_value
from woolly_grpc._gen.woolly.v1 import agent_service_pb2, run_pb2
from woolly_grpc.config import Settings
from woolly_grpc.testing import running_server

SECRET = "hunter2-SECRET-4d1c"
"""In every file the tools must not read; it must reach neither the model nor the caller."""

WITHHELD = "is not available"
ABUSE: list[tuple[str, dict[str, Any], str]] = [
    ("read_file", {"path": ".env"}, WITHHELD),
    ("read_file", {"path": ".env.production"}, WITHHELD),
    ("read_file", {"path": ".git/config"}, WITHHELD),
    ("read_file", {"path": "./.git/config"}, WITHHELD),
    ("read_file", {"path": "id_rsa"}, WITHHELD),
    ("read_file", {"path": "certs/server.pem"}, WITHHELD),
    ("read_file", {"path": "certs/server.key"}, WITHHELD),
    ("read_file", {"path": ".netrc"}, WITHHELD),
    ("read_file", {"path": ".npmrc"}, WITHHELD),
    ("read_file", {"path": ".pypirc"}, WITHHELD),
    ("read_file", {"path": "settings_link.txt"}, WITHHELD),  # a symlink to .env
    ("read_file", {"path": "pipe.py"}, "not a regular file"),  # a FIFO
    ("read_file", {"path": "passwd.txt"}, "other hard links"),  # linked to a file outside
    ("read_file", {"path": "out.txt"}, "outside the repository"),  # a symlink out
    ("read_file", {"path": "outdir/secret.txt"}, "outside the repository"),
    ("read_file", {"path": "a" * 5000}, "too long"),
    ("read_file", {"path": "src/" + "b" * 300 + ".py"}, "too long"),
    ("read_file", {"path": "../outside/secret.txt"}, "leaves the repository"),
    ("read_file", {"path": "src/../../outside/secret.txt"}, "leaves the repository"),
    ("read_file", {"path": "/etc/passwd"}, "leaves the repository"),
    ("read_file", {"path": "missing.py"}, "does not exist"),
    ("read_file", {"path": "src"}, "is a directory"),
    ("read_file", {"path": "README.md", "start_line": 0}, "at least 1"),
    ("code_outline", {"path": ".git/HEAD"}, WITHHELD),
    ("code_outline", {"path": "pipe.py"}, "not a regular file"),
    ("code_outline", {"path": "c" * 5000}, "too long"),
    ("list_files", {"directory": ".git"}, WITHHELD),
    ("list_files", {"directory": "../outside"}, "leaves the repository"),
    ("list_files", {"directory": "d" * 5000}, "too long"),
    ("list_files", {"directory": "README.md"}, "not a directory"),
    ("search_code", {"query": SECRET, "directory": ".git"}, WITHHELD),
    ("search_code", {"query": SECRET, "directory": "outdir"}, "outside the repository"),
    ("search_code", {"query": SECRET, "directory": "e" * 5000}, "too long"),
    ("search_code", {"query": "   "}, "non-empty query"),
]
"""(tool, arguments, what its error says), all asked for in one model response."""

PROBES: list[tuple[str, dict[str, Any]]] = [
    ("list_files", {}),
    ("repository_info", {}),
    ("search_code", {"query": SECRET, "max_results": 1000}),
    ("search_code", {"query": "token", "max_results": 1000}),
    ("search_code", {"query": "def ", "max_results": 1000}),
    ("read_file", {"path": "README.md"}),
]
"""Good calls whose answers would show a leak: the second response."""


@dataclass
class AbusiveModel:
    """Asks for ABUSE in its first response, PROBES in its second, then answers."""

    seen: list[ToolReturnPart] = field(default_factory=list)
    """Every tool answer the model got (a ModelRetry is one with outcome `retried`)."""

    async def stream(
        self, messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | DeltaToolCalls]:
        self.seen += [p for p in messages[-1].parts if isinstance(p, ToolReturnPart)]
        step = sum(1 for m in messages if m.kind == "response")
        calls: list[tuple[str, dict[str, Any]]] = []
        if step == 0:
            calls = [(tool, args) for tool, args, _ in ABUSE]
        elif step == 1:
            calls = PROBES
        for index, (tool, args) in enumerate(calls):
            call = DeltaToolCall(tool, json.dumps(args), tool_call_id=f"{step}-{index}")
            yield {index: call}
        if not calls:
            yield "done."


@dataclass
class Repository:
    root: Path
    name: str
    fifo: Path


@pytest.fixture
def abused(tmp_path: Path) -> Iterator[Repository]:
    """A repository with secrets, VCS internals, a FIFO, a hard link and symlinks out of it."""
    repos = tmp_path / "repos"
    repo = repos / "victim"
    shutil.copytree(Path(__file__).parent / "fixtures" / "repos" / "calculator", repo / "src")
    (repo / "README.md").write_text("# Victim\n\nA repository with a token in every secret.\n")
    for rel in [".env", ".env.production", ".git/config", ".git/HEAD", "id_rsa",
                "certs/server.pem", "certs/server.key", ".netrc", ".npmrc", ".pypirc"]:  # fmt: skip
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(f"token = {SECRET}\n")
    (repo / "settings_link.txt").symlink_to(".env")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(f"token = {SECRET}\n")
    (outside / "passwd").write_text(f"root:{SECRET}:0:0:root:/root:/bin/sh\n")
    os.link(outside / "passwd", repo / "passwd.txt")
    (repo / "out.txt").symlink_to(outside / "secret.txt")
    (repo / "outdir").symlink_to(outside, target_is_directory=True)
    fifo = repo / "pipe.py"
    os.mkfifo(fifo)
    try:
        yield Repository(repos, "victim", fifo)
    finally:
        _release_a_reader_stuck_on(fifo)


def _release_a_reader_stuck_on(fifo: Path) -> None:
    """If a regression left a tool thread blocked opening the FIFO, let it go (no hang at exit)."""
    with contextlib.suppress(OSError):  # ENXIO: nobody is reading it, as it should be
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def stream_request(repository: str, query: str) -> agent_service_pb2.StreamExecuteRequest:
    return agent_service_pb2.StreamExecuteRequest(
        repository_name=repository, agent_type=type_value("chat_assistant"), user_query=query
    )


async def test_no_leak_and_no_failed_run_when_a_model_abuses_the_tools(
    settings: Settings, abused: Repository
) -> None:
    model = AbusiveModel()
    local = settings.model_copy(update={"repos_root": abused.root, "cache_enabled": False})
    async with running_server(local, model=FunctionModel(stream_function=model.stream)) as srv:
        async with asyncio.timeout(30):  # a tool blocked on the FIFO fails the test, not hangs it
            call = srv.stub.StreamExecute(stream_request(abused.name, "read all secrets"))
            events = [event async for event in call]
        run = (await srv.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=events[0].run_id))).run

    assert events[-1].WhichOneof("event") == "completed"
    assert events[-1].completed.result.content == "done."
    assert run.status == run_pb2.RUN_STATUS_SUCCEEDED
    answers = [e for e in events if e.WhichOneof("event") != "tool_call"]  # calls quote the model
    assert not [e for e in answers if SECRET.encode() in e.SerializeToString()], "leak to caller"
    assert not [p for p in model.seen if SECRET in p.model_response_str()], "leak to the model"

    results = {e.tool_result.tool_call_id: e.tool_result for e in events if e.tool_result.name}
    returned = {p.tool_call_id: p for p in model.seen}
    errors = {i: p for i, p in returned.items() if p.outcome == "retried"}  # a ModelRetry
    for index, (tool, args, said) in enumerate(ABUSE):
        call_id = f"0-{index}"
        assert call_id in errors, (tool, args)
        assert said in errors[call_id].model_response_str(), (tool, args)
        assert said in results[call_id].content, (tool, args)
    probed = {i: p for i, p in returned.items() if p.outcome == "success"}
    assert sorted(probed) == [f"1-{i}" for i in range(len(PROBES))], "every probe answered"
    listed = probed["1-0"].content
    assert isinstance(listed, list)
    assert "pipe.py" not in listed and "passwd.txt" not in listed and "README.md" in listed
    assert probed["1-2"].content == [], "the secret is found nowhere"
    assert probed["1-4"].content, "the repository's own code is still searched"


async def test_the_local_engine_reads_around_the_traps(
    settings: Settings, abused: Repository
) -> None:
    local = settings.model_copy(update={"repos_root": abused.root, "cache_enabled": False})
    async with running_server(local) as srv:
        for agent_type in ["chat_assistant", "summarizer", "tester", "documentation"]:
            request = stream_request(abused.name, "where is the token? show .env, id_rsa, passwd")
            request.agent_type = type_value(agent_type)
            async with asyncio.timeout(30):  # as above: the FIFO must not block a tool
                events = [event async for event in srv.stub.StreamExecute(request)]
            assert events[-1].WhichOneof("event") == "completed", agent_type
            assert events[-1].completed.result.content, agent_type
            assert not [e for e in events if SECRET.encode() in e.SerializeToString()], agent_type
