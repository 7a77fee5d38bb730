"""docs/models.md's examples, run: each one's `export` lines start a real `woolly-grpc serve`
whose provider (pydantic-ai's, reading OPENAI_BASE_URL from the environment, as in production)
is the OpenAI-compatible test server, and a call goes through it."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.cli import run_cli
from tests.support.cli import serving as serve_process
from tests.support.openai_server import running_openai_server

DOC = (Path(__file__).parent.parent / "docs" / "models.md").read_text()
_BLOCK = re.compile(r"```console\n(.*?)```", re.DOTALL)
_EXPORT = re.compile(r"^\$ export (\w+)=(\S+)$", re.MULTILINE)


def examples() -> list[dict[str, str]]:
    """The environment of every example that points at an OpenAI-compatible server."""
    found = [dict(_EXPORT.findall(block)) for block in _BLOCK.findall(DOC)]
    return [env for env in found if "OPENAI_BASE_URL" in env]


def test_the_examples_cover_each_server() -> None:
    bases = {env["OPENAI_BASE_URL"] for env in examples()}
    assert {
        "http://localhost:8000/v1",
        "http://localhost:11434/v1",
        "http://localhost:8080/v1",
    } <= bases


@contextlib.asynccontextmanager
async def serving(
    env: dict[str, str], repos: Path, tmp: Path, log: list[str]
) -> AsyncIterator[str]:
    """`woolly-grpc serve` with this environment, at INFO; its log lines end up in `log`."""
    flags = ("--repos-root", str(repos), "--database-url", f"sqlite:///{tmp / 'agents.db'}")
    served = None
    try:
        async with serve_process(*flags, env=env) as served:
            yield served.address
    finally:
        log.extend(served.log if served else [])


@pytest.mark.parametrize("example", examples(), ids=lambda env: env["WOOLLY_MODEL"])
async def test_each_example_serves_calls_through_its_provider(
    example: dict[str, str], repos_root: Path, tmp_path: Path
) -> None:
    async with running_openai_server() as openai:
        primary = example["WOOLLY_MODEL"].removeprefix("openai-chat:")
        if "WOOLLY_MODEL_FALLBACKS" in example:
            openai.down.add(primary)  # the fallback example: the first model is down
        env = {**example, "OPENAI_BASE_URL": openai.url}
        log: list[str] = []
        async with serving(env, repos_root, tmp_path, log) as target:
            key = uuid.uuid4().hex
            code, out, err = await run_cli(
                *("execute", "calculator", "summarizer", f"hi !id={key}", "--target", target)
            )

    assert code == 0, err
    assert "part 1. part 2. part 3." in out
    answered = [r for r in openai.asked(key) if r.status == 200]
    expected = example.get("WOOLLY_MODEL_FALLBACKS", example["WOOLLY_MODEL"])
    assert [r.model for r in answered] == [expected.removeprefix("openai-chat:")]
    assert all(r.body["model"] for r in openai.asked(key))
    logged = "\n".join(log)
    assert "rpc /woolly.v1.AgentService/Execute OK" in logged, "the access log is at INFO"
    assert openai.url.split("//")[1].split("/")[0] not in logged, "no provider URL at INFO"


def test_every_failure_row_names_a_status() -> None:
    table = DOC.split("## When the provider fails")[1].split("\n\n")[2]
    statuses = {row.split("|")[2].strip() for row in table.splitlines()[2:]}
    assert statuses == {
        "UNAVAILABLE",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "INVALID_ARGUMENT",
    }
