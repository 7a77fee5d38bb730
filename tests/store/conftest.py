from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from tests.helpers import assert_eventually
from tests.support.redis_server import RedisServer, running_redis
from woolly_grpc.store import MemoryStore, RedisStore, Store


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest_asyncio.fixture
async def lone_server() -> AsyncIterator[RedisServer]:
    """A server of the test's own, to kill or pause."""
    async with running_redis() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest_asyncio.fixture
async def lone_store(lone_server: RedisServer, clock: FakeClock) -> AsyncIterator[RedisStore]:
    """A RedisStore with the default timeout and cooldown, on the test's own server."""
    store = RedisStore(lone_server.bare_url, clock=clock)
    yield store
    await store.close()


@pytest_asyncio.fixture
async def memory_store(clock: FakeClock) -> AsyncIterator[MemoryStore]:
    store = MemoryStore(clock=clock)
    yield store
    await store.close()


@pytest_asyncio.fixture
async def redis_store(redis_server: RedisServer, clock: FakeClock) -> AsyncIterator[RedisStore]:
    await redis_server.flush()
    # A generous timeout: these tests check behaviour, not speed, on a shared machine.
    store = RedisStore(redis_server.bare_url, op_timeout_s=2.0, clock=clock)
    yield store
    await store.close()


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Store:
    """Each backend in turn, empty (only the redis one needs the server)."""
    backend: Store = request.getfixturevalue(f"{request.param}_store")
    return backend


@pytest.fixture
def elapse(store: Store, clock: FakeClock) -> Callable[[float], Awaitable[None]]:
    """Let at least `seconds` pass on the store's own clock: the fake one, or Redis's."""

    async def elapse(seconds: float) -> None:
        if store.kind == "memory":
            clock.advance(seconds)
            return
        # A key set now expires once `seconds` have passed for Redis: wait for it, not a sleep.
        await store.set("elapse", b"", ttl_s=seconds)
        await assert_eventually(lambda: _missing(store, "elapse"), timeout=seconds + 10)

    return elapse


async def _missing(store: Store, key: str) -> bool:
    return await store.get(key) is None
