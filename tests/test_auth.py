"""API keys and tenants: who may call, and what one tenant can see of another's."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from prometheus_client import generate_latest
from pydantic import SecretStr

from tests.helpers import details, health_stub, type_value
from woolly_grpc import calls
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2, run_pb2
from woolly_grpc.config import Settings
from woolly_grpc.interceptors.keys import ApiKeys, ApiKeysError, bare_key_tenant
from woolly_grpc.interceptors.metrics import ACCESS_LOGGER
from woolly_grpc.server import StartupError, build
from woolly_grpc.testing import RunningServer, running_server

ALICE_KEY = "k-alice-7f3a9c1e5b"
BOB_KEY = "k-bob-2d8e4f6a0c"
BARE_KEY = "k-bare-9b1c3d5e7f"
KEYS = f"alice:{ALICE_KEY}, bob:{BOB_KEY}, {BARE_KEY}"
ALICE = (("authorization", f"Bearer {ALICE_KEY}"),)
BOB = (("authorization", f"Bearer {BOB_KEY}"),)
BARE = (("authorization", f"bearer {BARE_KEY}"),)


@pytest.fixture(scope="module")
async def guarded(settings: Settings) -> AsyncIterator[RunningServer]:
    async with running_server(settings.model_copy(update={"api_keys": SecretStr(KEYS)})) as srv:
        yield srv


def execute_request(query: str, **fields: Any) -> agent_service_pb2.ExecuteRequest:
    fields.setdefault("agent_type", type_value("summarizer"))
    return agent_service_pb2.ExecuteRequest(
        repository_name="calculator", user_query=query, **fields
    )


async def refusal(call: Any) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as caught:
        await call
    return caught.value


@pytest.mark.parametrize(
    ("metadata", "said"),
    [
        ((), "missing API key"),
        ((("authorization", "Bearer k-nobody-knows"),), "unknown API key"),
        ((("authorization", f"Basic {ALICE_KEY}"),), "malformed authorization"),
        ((("authorization", "Bearer "),), "malformed authorization"),
    ],
)
async def test_calls_without_a_known_key_are_unauthenticated(
    guarded: RunningServer, metadata, said: str
) -> None:
    stub = guarded.stub
    for call in (
        stub.ListAgentTypes(agent_service_pb2.ListAgentTypesRequest(), metadata=metadata),
        stub.Execute(execute_request("who am i"), metadata=metadata, timeout=10),
        stub.GetRun(agent_service_pb2.GetRunRequest(run_id="x"), metadata=metadata),
    ):
        error = await refusal(call)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert said in details(error)
        assert ALICE_KEY not in details(error)


async def test_health_and_reflection_need_no_key(guarded: RunningServer) -> None:
    health = await health_stub(guarded.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    reflection = guarded.channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    names = [
        service.name
        async for response in reflection(iter([request]), timeout=5)
        for service in response.list_services_response.service
    ]
    types = await guarded.stub.ListAgentTypes(
        agent_service_pb2.ListAgentTypesRequest(), metadata=BARE, timeout=5
    )

    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert "woolly.v1.AgentService" in names
    assert len(types.agent_types) == 6


async def test_cached_results_are_per_tenant(guarded: RunningServer) -> None:
    request = execute_request("tenant-scoped cache")
    alice_call = guarded.stub.Execute(request, metadata=ALICE, timeout=30)
    alice = await alice_call
    again = guarded.stub.Execute(request, metadata=ALICE, timeout=30)
    bob_call = guarded.stub.Execute(request, metadata=BOB, timeout=30)
    bob = await bob_call

    assert dict(await (again).trailing_metadata())["woolly-cache"] == "hit"
    assert (await again).run_id == alice.run_id
    assert dict(await bob_call.trailing_metadata())["woolly-cache"] == "miss"
    assert bob.run_id != alice.run_id and not bob.result.cached


async def test_another_tenants_run_is_not_found(guarded: RunningServer) -> None:
    stub = guarded.stub
    alice = await stub.Execute(execute_request("alice's run"), metadata=ALICE, timeout=30)
    mine = await stub.GetRun(agent_service_pb2.GetRunRequest(run_id=alice.run_id), metadata=ALICE)
    unknown = await refusal(
        stub.GetRun(agent_service_pb2.GetRunRequest(run_id="f" * 32), metadata=BOB)
    )

    calls = {
        "GetRun": stub.GetRun(
            agent_service_pb2.GetRunRequest(run_id=alice.run_id), metadata=BOB, timeout=10
        ),
        "CancelRun": stub.CancelRun(
            agent_service_pb2.CancelRunRequest(run_id=alice.run_id), metadata=BOB, timeout=10
        ),
        "RetryRun": stub.RetryRun(
            agent_service_pb2.RetryRunRequest(run_id=alice.run_id), metadata=BOB, timeout=10
        ),
        "WatchRun": _drain(
            stub.WatchRun(
                agent_service_pb2.WatchRunRequest(run_id=alice.run_id), metadata=BARE, timeout=10
            )
        ),
    }
    for name, call in calls.items():
        error = await refusal(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND, name
        # Word for word what an unknown id gets: nothing says the run exists.
        assert details(error) == details(unknown).replace("f" * 32, alice.run_id), name

    assert mine.run.tenant == "alice" and mine.run.status == run_pb2.RUN_STATUS_SUCCEEDED


async def _drain(call: Any) -> None:
    async for _ in call:
        pass


async def test_saved_agents_are_per_tenant(guarded: RunningServer) -> None:
    stub = guarded.stub
    definition = agent_pb2.AgentDefinition(
        name="reviewer", base_type=agent_pb2.AGENT_TYPE_SUMMARIZER, is_active=True
    )
    create = agent_service_pb2.CreateAgentRequest(agent=definition)
    alice_agent = (await stub.CreateAgent(create, metadata=ALICE, timeout=10)).agent
    bob_agent = (await stub.CreateAgent(create, metadata=BOB, timeout=10)).agent  # same name: ok
    bob_list = await stub.ListAgents(agent_service_pb2.ListAgentsRequest(), metadata=BOB)

    get = agent_service_pb2.GetAgentRequest(id=alice_agent.id)
    error = await refusal(stub.GetAgent(get, metadata=BOB, timeout=10))
    run_error = await refusal(
        stub.Execute(
            agent_service_pb2.ExecuteRequest(
                repository_name="calculator", agent_id=alice_agent.id, user_query="q"
            ),
            metadata=BOB,
            timeout=10,
        )
    )

    assert bob_agent.id != alice_agent.id
    assert [a.id for a in bob_list.agents] == [bob_agent.id]
    assert error.code() == run_error.code() == grpc.StatusCode.NOT_FOUND


async def test_keys_never_reach_logs_or_metrics(
    guarded: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stub = guarded.stub
    await stub.Execute(execute_request("logged"), metadata=ALICE, timeout=30)
    await stub.Execute(execute_request("logged"), metadata=BARE, timeout=30)
    await refusal(stub.Execute(execute_request("logged"), metadata=(("authorization", "x"),)))
    wrong = (("authorization", f"Bearer {ALICE_KEY}-typo"),)
    await refusal(stub.GetRun(agent_service_pb2.GetRunRequest(run_id="nope"), metadata=wrong))

    access = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    tenants = {getattr(r, "fields", {}).get("tenant") for r in access}
    everything = caplog.text + repr([vars(r) for r in caplog.records])
    everything += generate_latest(guarded.app.metrics.registry).decode()
    assert {"alice", bare_key_tenant(BARE_KEY), None} <= tenants
    assert any(r.getMessage().endswith("tenant=alice") for r in access)
    assert any("UNAUTHENTICATED" in r.getMessage() for r in access)
    for key in (ALICE_KEY, BOB_KEY, BARE_KEY):
        assert key not in everything
        assert key[2:] not in everything


def test_keys_load_from_a_file_and_are_checked(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# tenants\nalice:{ALICE_KEY}\n\n{BARE_KEY}  # its own tenant\n")
    keys = ApiKeys.load(str(keys_file))

    assert keys.tenant_of(ALICE_KEY) == "alice"
    assert keys.tenant_of(BARE_KEY) == bare_key_tenant(BARE_KEY) != BARE_KEY
    assert keys.tenant_of(BOB_KEY) is None
    for bad, said in [
        (f"alice:{ALICE_KEY},bob:{ALICE_KEY}", "entry 2 repeats the key of entry 1"),
        ("alice:", "entry 1: the key is empty"),
        (f"bad tenant:{ALICE_KEY}", "entry 1: a tenant is"),
        (" , ", "lists no keys"),
        (str(tmp_path / "missing"), "cannot read the keys file"),
    ]:
        with pytest.raises(ApiKeysError, match=said) as caught:
            ApiKeys.load(bad)
        assert ALICE_KEY not in str(caught.value)


def test_bad_keys_stop_start_up_without_quoting_them(settings: Settings) -> None:
    with pytest.raises(StartupError) as caught:
        build(settings.model_copy(update={"api_keys": SecretStr(f"a:{ALICE_KEY},b:{ALICE_KEY}")}))
    assert "WOOLLY_API_KEYS" in str(caught.value) and ALICE_KEY not in str(caught.value)
    assert ALICE_KEY not in repr(Settings(repos_root=settings.repos_root, api_keys=ALICE_KEY))


async def test_without_keys_everyone_is_the_empty_tenant(server: RunningServer) -> None:
    response = await server.stub.Execute(execute_request("open server"), metadata=BOB, timeout=30)
    run = await server.stub.GetRun(agent_service_pb2.GetRunRequest(run_id=response.run_id))
    assert run.run.tenant == ""
    assert calls.peek() is None, "the call's state stays in the server, never in this task"
