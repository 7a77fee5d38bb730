"""A database made by the previous release (schema by `create_all`, no migrations) is upgraded in
place at start-up, its agents kept (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from woolly_grpc.core import AgentType, Unavailable
from woolly_grpc.saved_agents import AgentDatabase, AgentFields
from woolly_grpc.saved_agents.database import async_database_url

PREVIOUS = sa.MetaData()
"""The saved_agents table exactly as the release before migrations created it."""
sa.Table(
    "saved_agents",
    PREVIOUS,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("system_prompt", sa.Text, nullable=False),
    sa.Column("base_type", sa.String(32), nullable=False),
    sa.Column("tools", sa.JSON, nullable=False),
    sa.Column("repository", sa.String(200), nullable=False),
    sa.Column("is_active", sa.Boolean, nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.UniqueConstraint("tenant", "repository", "name", name="uq_saved_agents_name"),
    sa.Index("ix_saved_agents_order", "tenant", "create_time", "id"),
)
OLD_ROW = {
    "id": "0" * 32,  # read back below
    "tenant": "acme",
    "name": "reviewer",
    "description": "kept across the upgrade",
    "system_prompt": "Cite file:line.",
    "base_type": "chat_assistant",
    "tools": ["read_file"],
    "repository": "",
    "is_active": True,
    "create_time": datetime(2026, 11, 1, tzinfo=UTC),
    "update_time": datetime(2026, 11, 1, tzinfo=UTC),
    "revision": 3,
}


async def make_previous_release_database(url: str) -> None:
    engine = create_async_engine(async_database_url(url))
    async with engine.begin() as connection:
        # The module's one database may hold what an earlier test migrated.
        await connection.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
        await connection.run_sync(PREVIOUS.drop_all)
        await connection.run_sync(PREVIOUS.create_all)
        await connection.execute(PREVIOUS.tables["saved_agents"].insert(), [OLD_ROW])
    await engine.dispose()


async def schema_revision(url: str) -> str:
    engine = create_async_engine(async_database_url(url))
    async with engine.connect() as connection:
        revision = await connection.execute(sa.text("SELECT version_num FROM alembic_version"))
        found = str(revision.scalar_one())
    await engine.dispose()
    return found


async def test_the_previous_schema_is_upgraded_and_its_agents_kept(database_url: str) -> None:
    await make_previous_release_database(database_url)
    database = AgentDatabase(database_url)
    try:
        await database.open()
        old = await database.get("acme", "0" * 32)
        new = await database.insert(
            "acme",
            AgentFields(
                name="cheap summaries",
                base_type=AgentType.SUMMARIZER,
                model="openai-chat:small",
                temperature=0.2,
                max_output_tokens=400,
            ),
        )
        again = await database.get("acme", new.id)
    finally:
        await database.close()

    assert old.fields.description == "kept across the upgrade" and old.revision == 3
    assert (old.fields.model, old.fields.temperature, old.fields.max_output_tokens) == (
        "",
        None,
        None,
    ), "an agent saved before per-agent models runs on the server's model"
    assert (again.fields.model, again.fields.temperature, again.fields.max_output_tokens) == (
        "openai-chat:small",
        0.2,
        400,
    )
    assert await schema_revision(database_url) == "0003"


async def test_opening_an_upgraded_database_again_changes_nothing(database_url: str) -> None:
    await make_previous_release_database(database_url)
    for _ in range(2):
        database = AgentDatabase(database_url)
        await database.open()
        await database.close()

    assert await schema_revision(database_url) == "0003"
    engine = create_async_engine(async_database_url(database_url))
    async with engine.connect() as connection:
        columns = await connection.run_sync(
            lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("saved_agents")}
        )
    await engine.dispose()
    assert {"model", "temperature", "max_output_tokens"} <= columns


async def test_a_database_from_a_newer_release_stops_start_up_clearly(database_url: str) -> None:
    await make_previous_release_database(database_url)
    database = AgentDatabase(database_url)
    await database.open()
    await database.close()
    engine = create_async_engine(async_database_url(database_url))
    async with engine.begin() as connection:
        await connection.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    await engine.dispose()

    newer = AgentDatabase(database_url)
    try:
        with pytest.raises(Unavailable) as caught:
            await newer.open()
    finally:
        await newer.close()

    assert "cannot migrate the saved-agents database" in str(caught.value)
    assert "0099" in str(caught.value) and "\n" not in str(caught.value)


async def test_replicas_opening_a_new_database_at_once_migrate_it_once(
    database_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if database_kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        url = await request.getfixturevalue("postgres_server").create_database()
    replicas = [AgentDatabase(url) for _ in range(4)]
    try:
        await asyncio.gather(*(r.open() for r in replicas))
        created = await replicas[0].insert("acme", AgentFields("x", AgentType.SUMMARIZER))
        seen = await replicas[3].get("acme", created.id)
    finally:
        await asyncio.gather(*(r.close() for r in replicas))

    assert seen.fields.name == "x" and await schema_revision(url) == "0003"
