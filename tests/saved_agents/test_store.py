"""Saved agents without gRPC: tenancy, races, URLs (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url

from tests.saved_agents.helpers import unique
from woolly_grpc.core import AgentType, AlreadyExists, NotFound, Unavailable
from woolly_grpc.saved_agents import AgentDatabase, AgentFields, SavedAgents
from woolly_grpc.saved_agents.database import async_database_url


@pytest_asyncio.fixture(scope="module")
async def agents(database_url: str) -> AsyncIterator[SavedAgents]:
    database = AgentDatabase(database_url)
    await database.open()

    async def no_tool_check() -> None:
        return None

    try:
        yield SavedAgents(database, no_tool_check)
    finally:
        await database.close()


def fields(name: str, **changes) -> AgentFields:
    return AgentFields(name=name, base_type=AgentType.SUMMARIZER, **changes)


async def test_a_tenant_sees_only_its_own_agents(agents: SavedAgents) -> None:
    name = unique()
    mine = await agents.create("acme", fields(name))
    # Another tenant may use the same name: names are unique per tenant and repository.
    theirs = await agents.create("globex", fields(name))

    assert (await agents.get("acme", mine.id)).fields.name == name
    for call in (
        agents.get("globex", mine.id),
        agents.update("globex", mine.id, fields("stolen"), ["name"]),
        agents.delete("globex", mine.id),
        agents.for_run("globex", [("agent_id", mine.id)], "calculator"),
    ):
        with pytest.raises(NotFound):
            await call
    listed = await agents.list_page("globex", "", 500, "")
    assert mine.id not in {a.id for a in listed.agents} and theirs.id in {
        a.id for a in listed.agents
    }
    assert await agents.revision_key("globex", [("agent_id", mine.id)]) == f"{mine.id}@0".encode()
    assert (await agents.get("acme", mine.id)).revision == 1


async def test_racing_creates_of_one_name_let_exactly_one_win(agents: SavedAgents) -> None:
    name = unique()
    outcomes = await asyncio.gather(
        *(agents.create("", fields(name, description=str(i))) for i in range(6)),
        return_exceptions=True,
    )

    created = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(created) == 1
    assert all(isinstance(o, AlreadyExists) for o in outcomes if o not in created)


async def test_concurrent_updates_each_count_once(agents: SavedAgents) -> None:
    agent = await agents.create("", fields(unique()))

    updated = await asyncio.gather(
        *(
            agents.update("", agent.id, fields("", description=f"v{i}"), ["description"])
            for i in range(4)
        )
    )

    assert sorted(u.revision for u in updated) == [2, 3, 4, 5]
    final = await agents.get("", agent.id)
    assert final.revision == 5
    assert (
        final.fields.description == next(u for u in updated if u.revision == 5).fields.description
    )


async def test_a_database_that_cannot_be_opened_is_unavailable(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        missing = database_url.replace("agents.db", "missing/dir/agents.db")
    else:
        missing = database_url.rsplit("/", 1)[0] + "/no_such_database"
    database = AgentDatabase(missing)

    with pytest.raises(Unavailable, match="cannot open the saved-agents database"):
        await database.open()
    await database.close()


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("sqlite:///woolly.db", "sqlite+aiosqlite"),
        ("sqlite:////var/lib/woolly/agents.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///woolly.db", "sqlite+aiosqlite"),
        ("postgresql://woolly:secret@db:5432/woolly", "postgresql+asyncpg"),
        ("postgres://woolly@db/woolly", "postgresql+asyncpg"),
        ("postgresql+psycopg2://woolly@db/woolly", "postgresql+asyncpg"),
        ("postgresql+asyncpg://woolly@db/woolly", "postgresql+asyncpg"),
    ],
)
def test_sync_style_urls_map_to_async_drivers(given: str, driver: str) -> None:
    url = async_database_url(given)

    assert url.drivername == driver
    assert url.database == make_url(given).database  # the path or database name is kept


def test_libpq_sslmode_becomes_asyncpgs_ssl() -> None:
    url = async_database_url("postgresql://w@db/w?sslmode=require")

    assert dict(url.query) == {"ssl": "require"}


@pytest.mark.parametrize("given", ["mysql://w@db/w", "not a url", "redis://localhost"])
def test_other_urls_are_refused(given: str) -> None:
    with pytest.raises(ValueError, match=r"sqlite:///PATH or postgresql://|not a database URL"):
        async_database_url(given)
