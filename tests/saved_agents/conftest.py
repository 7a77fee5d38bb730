"""Every saved-agent test runs twice: against SQLite and against a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.support.postgres_server import PostgresServer, running_postgres
from woolly_grpc.config import Settings
from woolly_grpc.testing import RunningServer, running_server


@pytest_asyncio.fixture(scope="session")
async def postgres_server() -> AsyncIterator[PostgresServer]:
    """One real PostgreSQL server for the session (skipped where PostgreSQL is missing)."""
    async with running_postgres() as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql":
        request.getfixturevalue("postgres_server")  # starts it, or skips these tests
    return str(request.param)


@pytest_asyncio.fixture(scope="module")
async def database_url(
    database_kind: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A fresh, empty database of the module's own."""
    if database_kind == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('agents') / 'agents.db'}"
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    return await postgres.create_database()


@pytest.fixture(scope="module")
def agent_settings(settings: Settings, database_url: str) -> Settings:
    return settings.model_copy(update={"database_url": database_url})


@pytest_asyncio.fixture(scope="module")
async def agents_server(agent_settings: Settings) -> AsyncIterator[RunningServer]:
    """A real server on the module's database, with the local engine."""
    async with running_server(agent_settings) as running:
        yield running
