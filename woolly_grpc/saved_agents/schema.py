"""The saved-agents table, its rows as records, and the migrations that bring a database to it.

The table is described here for queries; its schema is made by the Alembic migrations in
`migrations/`, run in one transaction (`migrate`) that SQLite, too, runs all or nothing
(`sqlite_transactions`).
"""

from __future__ import annotations

import asyncio
import weakref
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
    inspect,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from woolly_grpc.core import AgentType

from .rules import AgentFields, AgentRecord

SCHEMA_LOCK = 0x776F6F6C6C79
"""PostgreSQL advisory lock ("woolly"): replicas starting together migrate the schema once."""
_MIGRATIONS = Path(__file__).parent / "migrations"
_FIRST_REVISION = "0001"
"""The schema the release before migrations created (`create_all`)."""


class _Base(DeclarativeBase):
    pass


class AgentRow(_Base):
    """A saved agent as stored (a tenant's, in one row)."""

    __tablename__ = "saved_agents"
    __table_args__ = (
        UniqueConstraint("tenant", "repository", "name", name="uq_saved_agents_name"),
        Index("ix_saved_agents_order", "tenant", "create_time", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    system_prompt: Mapped[str] = mapped_column(Text)
    base_type: Mapped[str] = mapped_column(String(32))
    tools: Mapped[list[str]] = mapped_column(JSON)
    repository: Mapped[str] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(Boolean)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revision: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(200))
    temperature: Mapped[float | None] = mapped_column(Float)
    max_output_tokens: Mapped[int | None] = mapped_column(Integer)
    request_id: Mapped[str | None] = mapped_column(String(64))


def columns(agent: AgentFields) -> dict[str, object]:
    """The column values an agent's fields are stored as."""
    assert agent.base_type is not None, "validated before it is stored"
    return {
        "name": agent.name,
        "description": agent.description,
        "system_prompt": agent.system_prompt,
        "base_type": agent.base_type.value,
        "tools": list(agent.tools),
        "repository": agent.repository,
        "is_active": agent.is_active,
        "model": agent.model,
        "temperature": agent.temperature,
        "max_output_tokens": agent.max_output_tokens,
    }


def to_record(row: AgentRow) -> AgentRecord:
    """The record a stored row holds."""
    fields = AgentFields(
        name=row.name,
        base_type=AgentType(row.base_type),
        description=row.description,
        system_prompt=row.system_prompt,
        tools=tuple(row.tools),
        repository=row.repository,
        is_active=row.is_active,
        model=row.model,
        temperature=row.temperature,
        max_output_tokens=row.max_output_tokens,
    )
    return AgentRecord(row.id, fields, _utc(row.create_time), _utc(row.update_time), row.revision)


_MIGRATION_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def migration_lock() -> asyncio.Lock:
    """This event loop's lock for migrations (Alembic's state is global to the process)."""
    loop = asyncio.get_running_loop()
    if (lock := _MIGRATION_LOCKS.get(loop)) is None:
        lock = _MIGRATION_LOCKS[loop] = asyncio.Lock()
    return lock


def sqlite_transactions(engine: Engine) -> None:
    """Transactions that SQLite really runs, DDL included (SQLAlchemy's documented recipe).

    The sqlite3 driver starts transactions itself and commits before DDL, so a migration could
    stop half done. Its own handling is turned off and every transaction says BEGIN, or what a
    connection's `sqlite_begin` execution option says (BEGIN IMMEDIATE to migrate).
    """

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql(connection.get_execution_options().get("sqlite_begin", "BEGIN"))


def migrate(connection: Connection) -> None:
    """Upgrade the schema to the newest migration, in the caller's transaction.

    A database made before migrations existed has the table but no `alembic_version`: it is
    marked as the first revision, then upgraded like any other.
    """
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    tables = inspect(connection)
    if tables.has_table(AgentRow.__tablename__) and not tables.has_table("alembic_version"):
        command.stamp(config, _FIRST_REVISION)
    command.upgrade(config, "head")


def _utc(value: datetime) -> datetime:
    # SQLite keeps no time zone; every stored time is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
