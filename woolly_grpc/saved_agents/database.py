"""Where saved agents live: SQLAlchemy 2 async over SQLite (aiosqlite) or PostgreSQL (asyncpg).

One table (`schema.py`), brought to its newest schema at start-up by the Alembic migrations in
`migrations/` (replicas starting together take turns, under a PostgreSQL advisory lock). Every
query is scoped by tenant. A name is unique per (tenant, repository) through a unique constraint,
so two replicas racing to create the same name cannot both win. Updates are compare-and-set on
`revision`. Lists page by keyset on (create_time, id), with the position in an opaque token.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from alembic.util import CommandError
from sqlalchemy import and_, delete, or_, select, text, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from woolly_grpc.core import AlreadyExists, InvalidInput, NotFound, Unavailable

from .rules import AgentFields, AgentPage, AgentRecord
from .schema import (
    SCHEMA_LOCK,
    AgentRow,
    columns,
    migrate,
    migration_lock,
    sqlite_transactions,
    to_record,
)

_log = logging.getLogger(__name__)

DatabaseKind = Literal["sqlite", "postgresql"]
_CONNECT_TIMEOUT_S = 10.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def async_database_url(url: str) -> URL:
    """The async-driver URL of what users write: `sqlite:///…`, `postgresql://…` and the like.

    Raises:
        ValueError: not a URL, or not SQLite or PostgreSQL.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL ({exc})") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        query = dict(parsed.query)
        if "sslmode" in query:  # libpq's name; asyncpg calls it `ssl`
            query["ssl"] = query.pop("sslmode")
        return parsed.set(drivername="postgresql+asyncpg", query=query)
    raise ValueError("use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE")


class AgentDatabase:
    """Saved agent definitions in a SQL database.

    Every operation is bounded by `timeout_s`. A failure is Unavailable with a message for
    callers that names no address; the details go to the log, one WARNING when failures start
    and one INFO line when the database answers again.

    Args:
        url: A SQLite or PostgreSQL URL, sync style or with an async driver.
        timeout_s: Longest any one operation may take.

    Raises:
        ValueError: for a URL it cannot use (nothing is connected yet).
    """

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self.url = async_database_url(url)
        self.timeout_s = timeout_s
        self._failing = False
        self.failures = 0
        """Operations that failed since start (start-up's own excepted), for /metrics."""
        self.kind: DatabaseKind = (
            "sqlite" if self.url.get_backend_name() == "sqlite" else "postgresql"
        )
        if self.kind == "sqlite":
            connect_args = {"timeout": 30.0}  # seconds a writer waits for SQLite's lock
        else:
            connect_args = {"timeout": _CONNECT_TIMEOUT_S}
        self._engine = create_async_engine(
            self.url,
            pool_pre_ping=self.kind == "postgresql",
            connect_args=connect_args,
            # Parameters are tenants' data (system prompts): never in logs or error texts.
            hide_parameters=True,
        )
        if self.kind == "sqlite":
            sqlite_transactions(self._engine.sync_engine)
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)

    @property
    def display_url(self) -> str:
        """The URL without its password, for logs and errors."""
        return self.url.render_as_string(hide_password=True)

    async def open(self) -> None:
        """Connect and migrate the schema to its newest revision (Unavailable if that fails)."""
        database = self.url.database
        if self.kind == "sqlite" and database and not Path(database).parent.is_dir():
            # Checked before connecting: a failed aiosqlite connect leaves a worker thread that
            # can print a traceback after the event loop is gone.
            raise Unavailable(
                f"cannot open the saved-agents database: {self.display_url}: unable to open "
                f"database file (no directory {Path(database).parent})"
            )
        # Alembic's `context` and `op` are global to the process: one migration at a time.
        async with migration_lock(), self._errors("open"), self._engine.connect() as connection:
            # SQLite: BEGIN IMMEDIATE takes the write lock first, so two processes opening one
            # file take turns and a migration is all or nothing (see schema.sqlite_transactions).
            # PostgreSQL: replicas starting together take turns on an advisory lock.
            migrating = await connection.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            async with migrating.begin():
                if self.kind == "postgresql":
                    await migrating.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK}
                    )
                try:
                    await migrating.run_sync(migrate)
                except CommandError as exc:  # e.g. a database migrated by a newer release
                    raise Unavailable(
                        f"cannot migrate the saved-agents database {self.display_url}: "
                        f"{_first_line(exc)} (is it from a newer release of woolly-grpc?)"
                    ) from exc

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._engine.dispose()

    async def ping(self) -> None:
        """Run a trivial query (Unavailable if the database does not answer)."""
        async with self._errors("reach"), self._engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def insert(
        self, tenant: str, agent: AgentFields, request_id: str | None = None
    ) -> AgentRecord:
        """Store a new definition with a fresh id and revision 1.

        With a `request_id` it has seen before (in this tenant), it stores nothing and returns
        the agent that request created: a retry of a create that did happen.
        """
        if request_id and (created := await self._created_by(tenant, request_id)) is not None:
            return created
        now = datetime.now(UTC)
        row = AgentRow(
            id=uuid.uuid4().hex,
            tenant=tenant,
            create_time=now,
            update_time=now,
            revision=1,
            request_id=request_id or None,
            **columns(agent),
        )
        try:
            async with self._errors("write"), self._sessions.begin() as session:
                session.add(row)
        except IntegrityError as exc:
            # Two tries of one request racing: the other one created it.
            if request_id and (created := await self._created_by(tenant, request_id)):
                return created
            raise _name_taken(agent) from exc
        return to_record(row)

    async def _created_by(self, tenant: str, request_id: str) -> AgentRecord | None:
        query = select(AgentRow).where(AgentRow.tenant == tenant, AgentRow.request_id == request_id)
        async with self._errors("read"), self._sessions() as session:
            row = (await session.scalars(query)).first()
        return to_record(row) if row is not None else None

    async def get(self, tenant: str, agent_id: str) -> AgentRecord:
        """The definition with this id in this tenant (NotFound otherwise)."""
        found = await self.get_many(tenant, {agent_id})
        if agent_id not in found:
            raise NotFound("agent", agent_id)
        return found[agent_id]

    async def get_many(self, tenant: str, agent_ids: Collection[str]) -> dict[str, AgentRecord]:
        """The definitions among these ids that exist in this tenant, by id."""
        query = select(AgentRow).where(AgentRow.tenant == tenant, AgentRow.id.in_(agent_ids))
        async with self._errors("read"), self._sessions() as session:
            rows = (await session.scalars(query)).all()
        return {row.id: to_record(row) for row in rows}

    async def revisions(self, tenant: str, agent_ids: Collection[str]) -> dict[str, int]:
        """The current revision of each of these ids that exists in this tenant."""
        query = select(AgentRow.id, AgentRow.revision).where(
            AgentRow.tenant == tenant, AgentRow.id.in_(agent_ids)
        )
        async with self._errors("read"), self._sessions() as session:
            rows = (await session.execute(query)).all()
        return {agent_id: revision for agent_id, revision in rows}

    async def page(self, tenant: str, repository: str, size: int, token: str) -> AgentPage:
        """Up to `size` definitions after the token's position, oldest first.

        With a repository, only agents scoped to it or to no repository are listed.
        """
        query = select(AgentRow).where(AgentRow.tenant == tenant)
        if repository:
            query = query.where(AgentRow.repository.in_((repository, "")))
        if token:
            after_time, after_id = _decode_token(token, repository)
            query = query.where(
                or_(
                    AgentRow.create_time > after_time,
                    and_(AgentRow.create_time == after_time, AgentRow.id > after_id),
                )
            )
        query = query.order_by(AgentRow.create_time, AgentRow.id).limit(size + 1)
        async with self._errors("read"), self._sessions() as session:
            rows = (await session.scalars(query)).all()
        records = tuple(to_record(row) for row in rows[:size])
        more = len(rows) > size
        return AgentPage(records, _encode_token(records[-1], repository) if more else "")

    async def replace(
        self, tenant: str, current: AgentRecord, agent: AgentFields
    ) -> AgentRecord | None:
        """Write new fields if the stored revision is still `current`'s; None if it is not."""
        now = datetime.now(UTC)
        values = columns(agent) | {"update_time": now, "revision": current.revision + 1}
        query = (
            update(AgentRow)
            .where(
                AgentRow.tenant == tenant,
                AgentRow.id == current.id,
                AgentRow.revision == current.revision,
            )
            .values(**values)
        )
        try:
            async with self._errors("write"), self._sessions.begin() as session:
                changed = (await session.execute(query.returning(AgentRow.id))).first()
        except IntegrityError as exc:
            raise _name_taken(agent) from exc
        if changed is None:
            return None
        return AgentRecord(current.id, agent, current.create_time, now, current.revision + 1)

    async def delete(self, tenant: str, agent_id: str) -> None:
        """Delete a definition (NotFound if there is none)."""
        query = delete(AgentRow).where(AgentRow.tenant == tenant, AgentRow.id == agent_id)
        async with self._errors("write"), self._sessions.begin() as session:
            deleted = (await session.execute(query.returning(AgentRow.id))).first()
        if deleted is None:
            raise NotFound("agent", agent_id)

    @asynccontextmanager
    async def _errors(self, operation: str) -> AsyncIterator[None]:
        """Bound the operation; database failures as Unavailable.

        A unique violation goes through untouched. Only start-up (`open`, seen by the operator)
        says where the database is and what the driver said; callers' messages do not.
        """
        try:
            async with asyncio.timeout(self.timeout_s):
                yield
        except IntegrityError:
            raise
        except TimeoutError as exc:
            self._failed(operation, f"no answer within {self.timeout_s:g} s")
            raise Unavailable(
                f"cannot {operation} the saved-agents database: it did not answer within "
                f"{self.timeout_s:g} s"
            ) from exc
        except (SQLAlchemyError, OSError) as exc:
            self._failed(operation, _first_line(exc))
            said = (
                f"{self.display_url}: {_first_line(exc)}"
                if operation == "open"
                else "it is unreachable or failing"
            )
            raise Unavailable(f"cannot {operation} the saved-agents database: {said}") from exc
        if self._failing:
            self._failing = False
            _log.info("saved-agents database %s answers again", self.display_url)

    @property
    def failing(self) -> bool:
        """Whether its last operation failed (it answers again once one succeeds)."""
        return self._failing

    def _failed(self, operation: str, reason: str) -> None:
        if operation == "open":
            return  # start-up says it in its one line
        self.failures += 1
        if not self._failing:
            _log.warning(
                "saved-agents database %s failed (%s: %s); saved-agent calls are UNAVAILABLE "
                "until it answers",
                self.display_url,
                operation,
                reason,
            )
        self._failing = True


def _name_taken(agent: AgentFields) -> AlreadyExists:
    return AlreadyExists("agent", agent.name)


def _encode_token(last: AgentRecord, repository: str) -> str:
    micros = (last.create_time - _EPOCH) // _MICROSECOND
    raw = json.dumps({"r": repository, "t": micros, "i": last.id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_token(token: str, repository: str) -> tuple[datetime, str]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        micros, after_id, issued_for = int(raw["t"]), str(raw["i"]), str(raw["r"])
        after = _EPOCH + micros * _MICROSECOND
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise InvalidInput.one("page_token", "is not a token ListAgents returned") from exc
    if issued_for != repository:
        raise InvalidInput.one(
            "page_token", "was issued for another repository; list with the same repository"
        )
    return after, after_id


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
