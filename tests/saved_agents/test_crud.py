"""CreateAgent … DeleteAgent over real gRPC, against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc import aio

from tests.helpers import details, violations
from tests.saved_agents.helpers import CHAT, create, definition, get, unique, update
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2
from woolly_grpc.testing import RunningServer


async def rpc_error(call) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as caught:
        await call
    return caught.value


async def list_all(
    server: RunningServer, repository: str = "", page_size: int = 0
) -> list[list[agent_pb2.AgentDefinition]]:
    """Every page of ListAgents, following next_page_token to the end."""
    pages, token = [], ""
    while True:
        request = agent_service_pb2.ListAgentsRequest(
            repository=repository, page_size=page_size, page_token=token
        )
        response = await server.stub.ListAgents(request, timeout=10)
        pages.append(list(response.agents))
        token = response.next_page_token
        if not token:
            return pages


async def test_create_assigns_id_times_and_revision(agents_server: RunningServer) -> None:
    created = await create(
        agents_server,
        description="reviews the calculator",
        system_prompt="Answer in French.",
        tools=["read_file", "search_code"],
        repository="calculator",
        base_type=CHAT,
    )

    assert created.id and created.revision == 1
    assert created.is_active, "an unset is_active means active"
    assert created.create_time.ToDatetime() == created.update_time.ToDatetime()
    assert created.create_time.seconds > 0
    assert list(created.tools) == ["read_file", "search_code"]
    assert await get(agents_server, created.id) == created


async def test_ids_in_the_request_are_ignored(agents_server: RunningServer) -> None:
    created = await create(agents_server, id="mine", revision=7, is_active=False)

    assert created.id != "mine" and created.revision == 1
    assert not created.is_active, "an explicit false is kept"


async def test_a_name_is_unique_per_repository(agents_server: RunningServer) -> None:
    name = unique()
    await create(agents_server, name=name, repository="calculator")
    await create(agents_server, name=name)  # another scope: any repository

    error = await rpc_error(
        agents_server.stub.CreateAgent(
            agent_service_pb2.CreateAgentRequest(
                agent=definition(name=name, repository="calculator")
            ),
            timeout=10,
        )
    )

    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert name in details(error)


async def test_update_changes_only_the_masked_fields(agents_server: RunningServer) -> None:
    created = await create(agents_server, description="old", system_prompt="old prompt")

    updated = await update(
        agents_server, created.id, "description", description="new", system_prompt="ignored"
    )

    assert updated.description == "new"
    assert updated.system_prompt == "old prompt"
    assert updated.name == created.name and updated.base_type == created.base_type
    assert updated.revision == 2
    assert updated.create_time == created.create_time
    assert updated.update_time.ToDatetime() >= created.update_time.ToDatetime()
    assert await get(agents_server, created.id) == updated
    again = await update(agents_server, created.id, "is_active", is_active=False)
    assert again.revision == 3 and not again.is_active and again.description == "new"


async def test_an_empty_mask_replaces_every_writable_field(agents_server: RunningServer) -> None:
    created = await create(agents_server, description="d", tools=["read_file"], is_active=False)
    name = unique()

    updated = await update(agents_server, created.id, name=name, base_type=CHAT)

    assert (updated.name, updated.base_type) == (name, CHAT)
    assert updated.description == "" and list(updated.tools) == []
    assert updated.is_active, "replaced like a create: unset means active"
    assert (updated.id, updated.revision) == (created.id, 2)


@pytest.mark.parametrize(
    ("path", "said"), [("colour", "unknown field 'colour'"), ("revision", "output only")]
)
async def test_a_bad_mask_path_is_invalid(agents_server: RunningServer, path, said) -> None:
    created = await create(agents_server)

    error = await rpc_error(update(agents_server, created.id, "description", path))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert said in violations(error)["update_mask"]
    assert (await get(agents_server, created.id)).revision == 1


async def test_renaming_onto_a_taken_name_already_exists(agents_server: RunningServer) -> None:
    first = await create(agents_server)
    second = await create(agents_server)

    error = await rpc_error(update(agents_server, second.id, "name", name=first.name))

    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert (await get(agents_server, second.id)).name == second.name


BAD_FIELDS: dict[str, tuple[dict[str, Any], str, str]] = {
    "empty name": ({"name": ""}, "agent.name", "must not be empty"),
    "padded name": ({"name": " x "}, "agent.name", "whitespace"),
    "long name": ({"name": "n" * 101}, "agent.name", "the limit is 100"),
    "control char": ({"name": "a\x07b"}, "agent.name", "control characters"),
    "long description": ({"description": "d" * 2001}, "agent.description", "2,000"),
    "long prompt": ({"system_prompt": "p" * 20_001}, "agent.system_prompt", "20,000"),
    "no base type": ({"base_type": 0}, "agent.base_type", "must be specified"),
    "unknown base type": ({"base_type": 99}, "agent.base_type", "must be specified"),
    "unknown tool": ({"tools": ["read_file", "rm_rf"]}, "agent.tools", "'rm_rf'"),
    "repeated tool": ({"tools": ["read_file", "read_file"]}, "agent.tools", "more than once"),
    "escaping repository": ({"repository": "../etc"}, "agent.repository", "'/'"),
}


@pytest.mark.parametrize("case", BAD_FIELDS)
async def test_every_field_is_validated(agents_server: RunningServer, case: str) -> None:
    fields, field, said = BAD_FIELDS[case]
    request = agent_service_pb2.CreateAgentRequest(agent=definition(**fields))

    error = await rpc_error(agents_server.stub.CreateAgent(request, timeout=10))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert said in violations(error)[field], violations(error)


async def test_unknown_tools_are_named_with_the_real_ones(agents_server: RunningServer) -> None:
    created = await create(agents_server)

    error = await rpc_error(update(agents_server, created.id, "tools", tools=["grep"]))

    assert "the tools are code_outline, list_files, read_file" in violations(error)["agent.tools"]


async def test_pagination_walks_every_agent_once(agents_server: RunningServer) -> None:
    repository = unique("repo")
    made = [(await create(agents_server, repository=repository)).id for _ in range(23)]

    pages = await list_all(agents_server, repository=repository, page_size=5)

    listed = [agent.id for page in pages for agent in page]
    assert len(listed) == len(set(listed)), "no agent twice"
    assert [i for i in listed if i in made] == made, "all of them, oldest first"
    assert all(len(page) <= 5 for page in pages) and len(pages) >= 5
    scopes = {agent.repository for page in pages for agent in page}
    assert scopes <= {repository, ""}, "only its own and unscoped agents"


async def test_listing_without_a_repository_lists_every_scope(agents_server: RunningServer) -> None:
    scoped = await create(agents_server, repository=unique("repo"))

    listed = [agent.id for page in await list_all(agents_server, page_size=500) for agent in page]

    assert scoped.id in listed


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"page_size": -1}, "page_size"),
        ({"page_token": "not-a-token"}, "page_token"),
        ({"repository": "../up"}, "repository"),
    ],
)
async def test_bad_list_requests_are_invalid(
    agents_server: RunningServer, request_fields, field
) -> None:
    request = agent_service_pb2.ListAgentsRequest(**request_fields)

    error = await rpc_error(agents_server.stub.ListAgents(request, timeout=10))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(error)


async def test_a_page_token_belongs_to_its_repository(agents_server: RunningServer) -> None:
    repository = unique("repo")
    for _ in range(2):
        await create(agents_server, repository=repository)
    first = await agents_server.stub.ListAgents(
        agent_service_pb2.ListAgentsRequest(repository=repository, page_size=1), timeout=10
    )
    assert first.next_page_token

    error = await rpc_error(
        agents_server.stub.ListAgents(
            agent_service_pb2.ListAgentsRequest(
                repository="calculator", page_token=first.next_page_token
            ),
            timeout=10,
        )
    )

    assert "another repository" in violations(error)["page_token"]


async def test_delete(agents_server: RunningServer) -> None:
    created = await create(agents_server)
    delete = agent_service_pb2.DeleteAgentRequest(id=created.id)

    await agents_server.stub.DeleteAgent(delete, timeout=10)

    for call in (get(agents_server, created.id), agents_server.stub.DeleteAgent(delete)):
        assert (await rpc_error(call)).code() == grpc.StatusCode.NOT_FOUND
    # Its name is free again.
    assert (await create(agents_server, name=created.name)).id != created.id


async def test_a_repeated_request_id_answers_with_the_agent_it_created(
    agents_server: RunningServer,
) -> None:
    """A create retried after a lost answer must not fail on its own name nor make a twin."""
    request_id, name = unique("request"), unique()

    def request() -> agent_service_pb2.CreateAgentRequest:
        return agent_service_pb2.CreateAgentRequest(
            agent=definition(name=name), request_id=request_id
        )

    first = (await agents_server.stub.CreateAgent(request(), timeout=10)).agent
    racing = await asyncio.gather(
        *(agents_server.stub.CreateAgent(request(), timeout=10) for _ in range(8))
    )

    assert {response.agent.id for response in racing} == {first.id}
    assert [
        agent.id for page in await list_all(agents_server) for agent in page if agent.name == name
    ] == [first.id]
    # Without the id, the same name is taken as before.
    taken = await rpc_error(
        agents_server.stub.CreateAgent(
            agent_service_pb2.CreateAgentRequest(agent=definition(name=name)), timeout=10
        )
    )
    assert taken.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_racing_first_tries_of_one_request_id_make_one_agent(
    agents_server: RunningServer,
) -> None:
    request_id, name = unique("request"), unique()
    request = agent_service_pb2.CreateAgentRequest(
        agent=definition(name=name), request_id=request_id
    )

    racing = await asyncio.gather(
        *(agents_server.stub.CreateAgent(request, timeout=10) for _ in range(8))
    )

    assert len({response.agent.id for response in racing}) == 1


async def test_request_ids_are_checked(agents_server: RunningServer) -> None:
    other = await agents_server.stub.CreateAgent(
        agent_service_pb2.CreateAgentRequest(agent=definition(), request_id=unique("request")),
        timeout=10,
    )
    assert other.agent.id, "a fresh request id creates"

    for bad in ("x" * 65, "line\nbreak"):
        error = await rpc_error(
            agents_server.stub.CreateAgent(
                agent_service_pb2.CreateAgentRequest(agent=definition(), request_id=bad), timeout=10
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "64 printable" in violations(error)["request_id"]
