"""API keys that change without a restart (a followed key file) and read-only keys."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status
from pydantic import SecretStr, ValidationError
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tests.helpers import assert_eventually, details, read, read_rest, type_value
from tests.support.cli import run_cli
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2
from woolly_grpc.config import Settings, describe_error
from woolly_grpc.interceptors.keys import ApiKeys, Caller, bare_key_tenant
from woolly_grpc.testing import RunningServer, running_server

OLD_KEY = "k-old-4e1d9a7c"
NEW_KEY = "k-new-8b2f6c3e"
KEYS_LOGGER = "woolly_grpc.interceptors.keys"


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def stream_request(query: str) -> agent_service_pb2.StreamExecuteRequest:
    return agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator", agent_type=type_value("summarizer"), user_query=query
    )


async def answer(srv: RunningServer, key: str) -> grpc.StatusCode:
    """How the server answers a cheap call made with `key`."""
    request = agent_service_pb2.ListAgentTypesRequest()
    try:
        await srv.stub.ListAgentTypes(request, metadata=bearer(key), timeout=10)
    except aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def rotated(srv: RunningServer, old: str, new: str) -> bool:
    return (
        await answer(srv, old) == grpc.StatusCode.UNAUTHENTICATED
        and await answer(srv, new) == grpc.StatusCode.OK
    )


class Gate:
    """A model that answers "working. ", then waits to be let through before "done."."""

    def __init__(self) -> None:
        self.open = asyncio.Event()

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        yield "working. "
        await self.open.wait()
        yield "done."


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text(f"# rotated by the operator\nalice:{OLD_KEY}\n")
    return path


async def test_a_rewritten_key_file_takes_effect_and_calls_in_flight_finish(
    settings: Settings, key_file: Path
) -> None:
    gate = Gate()
    followed = settings.model_copy(update={"api_keys_file": key_file})
    async with running_server(followed, model=FunctionModel(stream_function=gate.stream)) as srv:
        assert await answer(srv, OLD_KEY) == grpc.StatusCode.OK
        assert await answer(srv, NEW_KEY) == grpc.StatusCode.UNAUTHENTICATED
        in_flight = srv.stub.StreamExecute(
            stream_request("started before"), metadata=bearer(OLD_KEY), timeout=30
        )
        await read(in_flight)
        await read(in_flight)  # at the gate, on the old key

        await asyncio.to_thread(key_file.write_text, f"alice:{NEW_KEY}\n")
        await assert_eventually(lambda: rotated(srv, OLD_KEY, NEW_KEY), every=0.05)
        gate.open.set()
        rest = await read_rest(in_flight)

    assert rest[-1].completed.result.content == "working. done."
    assert (await in_flight.code()) == grpc.StatusCode.OK


def publish_secret(mount: Path, version: str, keys: str) -> None:
    """Write a mounted secret the way the kubelet does: `keys` -> `..data/keys`, `..data` ->
    `..<version>/`; an update renames a new `..data` link over the old one, then removes the
    old directory."""
    (mount / version).mkdir(parents=True)
    (mount / version / "keys").write_text(keys)
    old = os.readlink(mount / "..data") if (mount / "..data").is_symlink() else None
    (mount / "..data_tmp").symlink_to(version)
    os.replace(mount / "..data_tmp", mount / "..data")
    if old is None:
        (mount / "keys").symlink_to("..data/keys")
    else:
        shutil.rmtree(mount / old)


async def test_a_kubernetes_secret_update_is_followed(settings: Settings, tmp_path: Path) -> None:
    mount = tmp_path / "secret"
    publish_secret(mount, "..2026_01_01_00_00_00.1", f"alice:{OLD_KEY}\n")
    followed = settings.model_copy(update={"api_keys_file": mount / "keys"})
    async with running_server(followed) as srv:
        assert await answer(srv, OLD_KEY) == grpc.StatusCode.OK

        publish_secret(mount, "..2026_01_02_00_00_00.2", f"alice:{NEW_KEY}\n")
        await assert_eventually(lambda: rotated(srv, OLD_KEY, NEW_KEY), every=0.05)

    assert not (mount / "..2026_01_01_00_00_00.1").exists()


async def test_a_bad_key_file_keeps_the_last_good_keys_and_warns_once(
    settings: Settings, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=KEYS_LOGGER)

    def warnings() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == KEYS_LOGGER and r.levelno == logging.WARNING
        ]

    followed = settings.model_copy(update={"api_keys_file": key_file})
    async with running_server(followed) as srv:
        watcher = srv.app.key_file
        assert watcher is not None

        await asyncio.to_thread(key_file.write_text, f"bad tenant:{NEW_KEY}\n")
        await assert_eventually(lambda: len(warnings()) == 1, every=0.05)
        for _ in range(3):  # what each poll does; the same bad file is not news
            assert not await watcher.reload()
        invalid_answers = (await answer(srv, OLD_KEY), await answer(srv, NEW_KEY))

        await asyncio.to_thread(key_file.unlink)
        await assert_eventually(lambda: len(warnings()) == 2, every=0.05)
        for _ in range(3):
            await watcher.reload()
        missing_answer = await answer(srv, OLD_KEY)

        await asyncio.to_thread(key_file.write_text, f"alice:{NEW_KEY}\n")
        await assert_eventually(lambda: rotated(srv, OLD_KEY, NEW_KEY), every=0.05)

    assert invalid_answers == (grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED)
    assert missing_answer == grpc.StatusCode.OK
    first, second = warnings()
    assert "is invalid: entry 1: a tenant is" in first and "keys loaded before stay" in first
    assert "cannot read the keys file" in second
    assert NEW_KEY not in caplog.text and OLD_KEY not in caplog.text
    assert any("API keys reloaded" in r.getMessage() for r in caplog.records)


READER_KEY = "k-reader-5a9e2c1f"
WRITER_KEY = "k-writer-3d7b0e6a"


@pytest.fixture(scope="module")
async def read_only(settings: Settings) -> AsyncIterator[RunningServer]:
    # A tenant of its own: the saved-agents database is the session's.
    keys = SecretStr(f"dana:{READER_KEY}:ro, dana:{WRITER_KEY}")
    async with running_server(settings.model_copy(update={"api_keys": keys})) as srv:
        yield srv


async def refusal(call: Any) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as caught:
        await call
    return caught.value


def error_info(error: aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert any(detail.Unpack(info) for detail in status.details)
    return info


async def test_a_read_only_key_runs_and_reads_but_cannot_change_saved_agents(
    read_only: RunningServer,
) -> None:
    stub, reader, writer = read_only.stub, bearer(READER_KEY), bearer(WRITER_KEY)
    definition = agent_pb2.AgentDefinition(
        name="read-only probe", base_type=agent_pb2.AGENT_TYPE_SUMMARIZER, is_active=True
    )
    saved = (
        await stub.CreateAgent(
            agent_service_pb2.CreateAgentRequest(agent=definition), metadata=writer, timeout=10
        )
    ).agent

    ran = await stub.Execute(
        agent_service_pb2.ExecuteRequest(
            repository_name="calculator", agent_id=saved.id, user_query="read only"
        ),
        metadata=reader,
        timeout=30,
    )
    run = await stub.GetRun(agent_service_pb2.GetRunRequest(run_id=ran.run_id), metadata=reader)
    got = await stub.GetAgent(agent_service_pb2.GetAgentRequest(id=saved.id), metadata=reader)
    listed = await stub.ListAgents(agent_service_pb2.ListAgentsRequest(), metadata=reader)
    edited = agent_pb2.AgentDefinition(id=saved.id, description="changed")
    writes = {
        "CreateAgent": stub.CreateAgent(
            agent_service_pb2.CreateAgentRequest(agent=definition), metadata=reader, timeout=10
        ),
        "UpdateAgent": stub.UpdateAgent(
            agent_service_pb2.UpdateAgentRequest(
                agent=edited, update_mask=field_mask_pb2.FieldMask(paths=["description"])
            ),
            metadata=reader,
            timeout=10,
        ),
        "DeleteAgent": stub.DeleteAgent(
            agent_service_pb2.DeleteAgentRequest(id=saved.id), metadata=reader, timeout=10
        ),
    }
    refused = {name: await refusal(call) for name, call in writes.items()}
    after = await stub.GetAgent(agent_service_pb2.GetAgentRequest(id=saved.id), metadata=writer)

    assert run.run.tenant == "dana" and ran.result.content
    assert got.agent.id == saved.id and [a.id for a in listed.agents] == [saved.id]
    for name, error in refused.items():
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, name
        assert "this API key is read-only" in details(error) and name in details(error)
        info = error_info(error)
        assert (info.reason, info.domain, info.metadata["method"]) == (
            "READ_ONLY_KEY",
            "woolly.v1.AgentService",
            name,
        )
        assert READER_KEY not in details(error)
    assert after.agent == saved, "nothing a read-only key asked for was changed"


def test_read_only_entries_are_parsed() -> None:
    keys = ApiKeys.parse("alice:k1:ro, bob:k2, k3, carol:ro, dan:k:4:ro")

    assert keys.caller_of("k1") == Caller("alice", read_only=True)
    assert keys.caller_of("k2") == Caller("bob")
    assert keys.caller_of("k3") == Caller(bare_key_tenant("k3"))
    assert keys.caller_of("ro") == Caller("carol"), "`tenant:ro` is the key `ro`"
    assert keys.caller_of("k:4") == Caller("dan", read_only=True)
    assert keys.caller_of("k1:ro") is None


def test_keys_and_a_key_file_together_are_refused(settings: Settings, key_file: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(repos_root=settings.repos_root, api_keys=OLD_KEY, api_keys_file=key_file)
    said = describe_error(caught.value)

    assert said == "invalid settings: set WOOLLY_API_KEYS or WOOLLY_API_KEYS_FILE, not both"


async def test_bad_limits_and_key_files_stop_start_up_with_one_line(tmp_path: Path) -> None:
    cases = [
        (
            ["--api-keys-file", str(tmp_path / "missing")],
            "cannot use WOOLLY_API_KEYS_FILE: cannot read the keys file",
        ),
        (["--tenant-max-concurrent-runs", "0"], "WOOLLY_TENANT_MAX_CONCURRENT_RUNS"),
        (
            ["--max-concurrent-runs", "4", "--tenant-max-concurrent-runs", "8"],
            "WOOLLY_TENANT_MAX_CONCURRENT_RUNS (8) is above WOOLLY_MAX_CONCURRENT_RUNS (4)",
        ),
        (
            ["--max-cache-ttl-s", "60"],
            "WOOLLY_CACHE_TTL_S (3600) is above WOOLLY_MAX_CACHE_TTL_S (60)",
        ),
    ]
    for flags, said in cases:
        code, _, err = await run_cli("serve", "--metrics-port", "0", "--port", "0", *flags)
        assert code == 2, flags
        assert err.strip().count("\n") == 0, err
        assert said in err, err
