from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pydantic_ai.models
import pytest
import pytest_asyncio

from tests.support.redis_server import RedisServer, running_redis
from woolly_grpc.config import Settings
from woolly_grpc.testing import RunningServer, running_server

# The only fake is the model, and it is always local: no test may reach a provider.
pydantic_ai.models.ALLOW_MODEL_REQUESTS = False

REPOS_ROOT = Path(__file__).parent / "fixtures" / "repos"


@pytest.fixture(scope="session")
def repos_root() -> Path:
    return REPOS_ROOT


@pytest.fixture(scope="session")
def settings(repos_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # Runs whose callers leave are cancelled at once; orphan-grace tests set their own.
    # Saved agents go to a database of the session's own, never ./woolly.db.
    database = tmp_path_factory.mktemp("database") / "woolly.db"
    # No /metrics endpoint (its default port is fixed); metrics tests give theirs a free one.
    # Redis tests see every read reach Redis; tests of the in-process copy turn it on.
    return Settings(
        repos_root=repos_root,
        orphan_grace_s=0,
        database_url=f"sqlite:///{database}",
        metrics_port=0,
        cache_hot_ttl_s=0,
    )


@pytest_asyncio.fixture(scope="session")
async def redis_server() -> AsyncIterator[RedisServer]:
    """One real redis-server for the session (skipped where redis-server is missing)."""
    async with running_redis() as server:
        yield server


@pytest_asyncio.fixture(scope="session")
async def server(settings: Settings) -> AsyncIterator[RunningServer]:
    """One real server with the local engine, shared by the session."""
    async with running_server(settings) as running:
        yield running
