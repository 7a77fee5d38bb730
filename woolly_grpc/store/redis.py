"""RedisStore: the Store replicas share, over redis.asyncio, failing fast while Redis is down."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, ClusterPubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from .base import Append, Claim, Publish, Put, StoreError, Write

DEFAULT_OP_TIMEOUT_S = 0.25
DEFAULT_COOLDOWN_S = 1.0
DEFAULT_MAX_CONNECTIONS = 256
"""Connections per replica for operations (subscriptions have their own)."""
_MAX_SUBSCRIPTIONS = 10_000
"""Redis' own default client limit: one per remote WatchRun, plus the control channel."""
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_CLAIM = """
local held = redis.call('GET', KEYS[1])
if held == false or held == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
"""Hold a key for ARGV[1] for ARGV[2] ms unless someone else holds it (`Store.claim`)."""
_FAILURES = (RedisError, RedisClusterException, OSError)
"""What redis.asyncio raises (its cluster client's "no node reachable" is no RedisError);
TimeoutError (asyncio.timeout's too) is an OSError."""


class RedisStore:
    """A Store in Redis, so that replicas share the result cache, run logs and notifications.

    One connection pool serves every operation, and each operation (waiting for a free
    connection and connecting included) is bounded by `op_timeout_s`, without retries: a burst
    larger than the pool (`?max_connections=N`, default 256) queues instead of failing. After a
    connection failure or a timeout the store fails fast, raising StoreError without touching
    the network, for `cooldown_s`: while Redis is down, calls that go on uncached do not each
    wait for a timeout. The first operation after the cooldown tries Redis again (the others
    keep failing fast until it answers) and its success closes the breaker. An error *answer*
    such as WRONGTYPE raises StoreError but leaves the breaker closed: Redis is up.

    A Redis Cluster is served by redis-py's cluster client: keys that must be together carry a
    hash tag (run keys: `{run id}`), a batch spanning slots goes out as one pipeline per node,
    and a subscription listens on the node that owns its channel's slot (PUBLISH reaches every
    node). Operations wait for one of `max_connections` slots rather than fail: the cluster
    client has no blocking pool.

    Args:
        url: `redis://[[user]:password@]host:port/db` or `rediss://…`, or for a cluster
            `redis+cluster://[[user]:password@]host:port[,host:port…]` (any of its nodes; the
            client finds the rest); redis-py query options pass through.
        op_timeout_s: Longest any operation may take.
        cooldown_s: How long to fail fast after a failure.
        prefix: Prepended to every key and channel, so other users of the database are safe.
        clock: Monotonic seconds for the breaker; tests pass a fake one.
    """

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        op_timeout_s: float = DEFAULT_OP_TIMEOUT_S,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        prefix: str = "woolly:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if op_timeout_s <= 0 or cooldown_s < 0:
            raise ValueError("op_timeout_s must be positive and cooldown_s not negative")
        parts = urlsplit(url)
        cluster = parts.scheme in CLUSTER_SCHEMES
        credentials, _, hosts = parts.netloc.rpartition("@")
        self._where = hosts if cluster else f"{parts.hostname}:{parts.port or 6379}{parts.path}"
        """Where Redis is, for messages: never the password."""
        self._password = parts.password if not cluster else credentials.partition(":")[2] or None
        self._op_timeout_s = op_timeout_s
        self._cooldown_s = cooldown_s
        self._prefix = prefix
        self._clock = clock
        self._retry_at: float | None = None
        self._failed_at: float | None = None
        """When an operation last failed (monotonic), for `steady_s`."""
        """While set, operations fail fast until the clock reaches it (the breaker is open)."""
        self._subscriptions: set[_Messages] = set()
        no_retries: dict[str, Any] = {
            "socket_timeout": op_timeout_s,
            "socket_connect_timeout": op_timeout_s,
            "retry": Retry(NoBackoff(), 0),  # the breaker and the caller's fallback handle failures
        }
        self._redis: Redis | RedisCluster
        self._subscriber: Redis | RedisCluster
        self._slots: asyncio.Semaphore | None = None
        """With a cluster: operations in flight at most (its client has no blocking pool)."""
        if cluster:
            node_url, others = _cluster_nodes(parts, credentials)
            max_connections = int(
                dict(parse_qsl(parts.query)).get("max_connections", DEFAULT_MAX_CONNECTIONS)
            )
            self._slots = asyncio.Semaphore(max_connections)
            self._redis = RedisCluster.from_url(
                node_url, startup_nodes=others, max_connections=max_connections, **no_retries
            )
            self._subscriber = RedisCluster.from_url(
                _without_option(node_url, "max_connections"),
                startup_nodes=others,
                max_connections=_MAX_SUBSCRIPTIONS,
                **no_retries,
            )
            return
        # redis-py's default pool raises "Too many connections" past 100 operations in flight,
        # which would open the breaker under load; this one makes the extra operations wait.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=DEFAULT_MAX_CONNECTIONS,  # the URL's own option wins
            timeout=op_timeout_s,
            **no_retries,
        )
        self._redis = Redis.from_pool(pool)
        # Each subscription holds a connection while it lasts: they get a client of their own,
        # so that many remote watchers never leave the operations waiting for a connection.
        self._subscriber = Redis.from_url(
            _without_option(url, "max_connections"),  # that bound is the operations' pool's
            max_connections=_MAX_SUBSCRIPTIONS,
            **no_retries,
        )

    def __repr__(self) -> str:
        return f"RedisStore({self._where!r})"

    async def get(self, key: str) -> bytes | None:
        """The value under `key`, or None when it is missing or expired."""
        async with self._guard("get"):
            value = await self._redis.get(self._prefix + key)
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes, *, ttl_s: float) -> None:
        """SET with PX, so sub-second TTLs hold."""
        async with self._guard("set"):
            await self._redis.set(self._prefix + key, value, px=_ms(ttl_s))

    async def append(self, key: str, entries: Sequence[bytes], *, ttl_s: float) -> int:
        """RPUSH and PEXPIRE in one round trip; returns the log's new length."""
        name = self._prefix + key
        async with self._guard("append"), self._redis.pipeline(transaction=False) as pipe:
            if entries:
                pipe.rpush(name, *entries)
            else:
                pipe.llen(name)  # RPUSH needs an entry; still renew the TTL
            pipe.pexpire(name, _ms(ttl_s))
            length, _ = await pipe.execute()
        return int(length)

    async def read(self, key: str, start: int = 0) -> list[bytes]:
        """LRANGE from `start` to the end."""
        async with self._guard("read"):
            entries = await self._redis.lrange(self._prefix + key, max(start, 0), -1)
        return [entry.encode() if isinstance(entry, str) else entry for entry in entries]

    async def claim(self, key: str, holder: str, *, ttl_s: float) -> bool:
        """A Lua script: GET, then SET PX if free or already `holder`'s; atomic in Redis."""
        async with self._guard("claim"):
            held = await self._redis.eval(_CLAIM, 1, self._prefix + key, holder, _ms(ttl_s))
        return bool(held)

    async def write(self, batch: Sequence[Write]) -> list[bool]:
        """One pipeline (not a transaction): a round trip for the whole batch.

        An `Append` that keeps its log's expiry but found no log (Redis lost it, e.g. restarted
        empty) created one without any: that log then gets its TTL in a second round trip.
        """
        if not batch:
            return []
        async with self._guard("write"), self._redis.pipeline(transaction=False) as pipe:
            claims: list[int] = []  # where each Claim's answer is among the pipeline's replies
            kept: list[tuple[int, Append]] = []  # appends that keep the expiry, and their reply
            for op in batch:
                if isinstance(op, Claim):
                    claims.append(len(pipe))
                elif isinstance(op, Append) and op.entries and not op.renew:
                    kept.append((len(pipe), op))
                self._queue(pipe, op)
            replies = await pipe.execute()
            for op in [op for at, op in kept if replies[at] == len(op.entries)]:
                await self._redis.pexpire(self._prefix + op.key, _ms(op.ttl_s))
        answers = iter(bool(replies[i]) for i in claims)
        return [next(answers) if isinstance(op, Claim) else True for op in batch]

    def _queue(self, pipe: Pipeline | ClusterPipeline, op: Write) -> None:
        """Queue one operation of a `write` (a Claim or an Append's entries first)."""
        match op:
            case Put():
                pipe.set(self._prefix + op.key, op.value, px=_ms(op.ttl_s))
            case Append():
                if op.entries:
                    pipe.rpush(self._prefix + op.key, *op.entries)
                if op.renew:
                    pipe.pexpire(self._prefix + op.key, _ms(op.ttl_s))
            case Publish() if isinstance(pipe, ClusterPipeline):
                pipe.spublish(self._prefix + op.channel, op.message)
            case Publish():
                pipe.publish(self._prefix + op.channel, op.message)
            case Claim():
                pipe.eval(_CLAIM, 1, self._prefix + op.key, op.holder, _ms(op.ttl_s))

    def steady_s(self) -> float:
        """Seconds since the last failed operation (inf if none)."""
        return math.inf if self._failed_at is None else self._clock() - self._failed_at

    async def publish(self, channel: str, message: bytes) -> None:
        """PUBLISH (on a cluster SPUBLISH) to the subscribers of `channel` on every replica."""
        async with self._guard("publish"):
            if isinstance(self._redis, RedisCluster):
                await self._redis.spublish(self._prefix + channel, message)
            else:
                await self._redis.publish(self._prefix + channel, message)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """SUBSCRIBE on a connection of its own, closed (so unsubscribed) when the block exits.

        On a cluster, SSUBSCRIBE at the node owning the channel's slot: a run's messages then
        stay on its shard instead of crossing the cluster bus to every node.
        """
        pubsub = self._subscriber.pubsub()
        sharded = isinstance(pubsub, ClusterPubSub)
        messages = _Messages(self, pubsub, sharded)
        self._subscriptions.add(messages)
        try:
            async with self._guard("subscribe"):
                if sharded:
                    assert isinstance(self._subscriber, RedisCluster)
                    await self._subscriber.initialize()  # the slot map routes the channel
                    await pubsub.ssubscribe(self._prefix + channel)
                else:
                    await pubsub.subscribe(self._prefix + channel)
                # Wait for Redis to confirm: any message published after this is delivered.
                confirmed = "ssubscribe" if sharded else "subscribe"
                while (await messages.next_message() or {}).get("type") != confirmed:
                    pass
            yield messages
        finally:
            messages.ended = True
            self._subscriptions.discard(messages)
            with contextlib.suppress(*_FAILURES):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def ping(self) -> float:
        """PING's round trip in seconds."""
        async with self._guard("ping"):
            started = time.perf_counter()
            await self._redis.ping()
            return time.perf_counter() - started

    async def close(self) -> None:
        """Close the pool's connections; open subscriptions raise StoreError from then on."""
        for messages in self._subscriptions:
            messages.error = StoreError("the redis store was closed")
        try:
            async with asyncio.timeout(self._op_timeout_s):
                await self._redis.aclose()
                await self._subscriber.aclose()
        except _FAILURES as exc:
            raise self._error("close", exc) from exc

    @asynccontextmanager
    async def _guard(self, operation: str) -> AsyncIterator[None]:
        """Fail fast while the breaker is open; bound the operation; map errors to StoreError."""
        if self._retry_at is not None:
            now = self._clock()
            if now < self._retry_at:
                raise StoreError(
                    f"redis {operation} skipped: {self._where} failed less than "
                    f"{self._cooldown_s}s ago"
                )
            self._retry_at = now + self._cooldown_s  # this call probes; the others fail fast
        try:
            async with asyncio.timeout(self._op_timeout_s), self._slot():
                yield
        except ResponseError as exc:
            self._retry_at = None  # Redis answered: it is up, the request was wrong
            raise self._error(operation, exc) from exc
        except _FAILURES as exc:
            raise self._failed(operation, exc) from exc
        self._retry_at = None

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._slots is None:
            yield
            return
        async with self._slots:
            # Learn the cluster's layout first, once for all: operations that each start
            # redis-py's own lazy discovery at once break one another's connections.
            assert isinstance(self._redis, RedisCluster)
            await self._redis.initialize()
            yield

    def _failed(self, operation: str, exc: BaseException) -> StoreError:
        """Open the breaker and describe the failure."""
        self._failed_at = self._clock()
        self._retry_at = self._failed_at + self._cooldown_s
        return self._error(operation, exc)

    def _error(self, operation: str, exc: BaseException) -> StoreError:
        reason = str(exc)
        if not reason:
            timed_out = isinstance(exc, TimeoutError)
            reason = f"no answer within {self._op_timeout_s}s" if timed_out else repr(exc)
        message = f"redis {operation} at {self._where} failed: {reason}"[:300]
        if self._password:
            message = message.replace(self._password, "***")
        return StoreError(message)


class _Messages:
    """The payloads of one subscription; after a failure it keeps raising that StoreError."""

    def __init__(self, store: RedisStore, pubsub: PubSub, sharded: bool) -> None:
        self._store = store
        self._pubsub = pubsub
        self._sharded = sharded
        self.error: StoreError | None = None
        """Raised by every later read: the connection failed or the store was closed."""
        self.ended = False

    def __aiter__(self) -> _Messages:
        return self

    async def __anext__(self) -> bytes:
        while not self.ended:
            if self.error is not None:
                raise self.error
            try:
                message = await self.next_message()
            except _FAILURES as exc:
                if self.error is None:
                    self.error = self._store._failed("subscription", exc)
                raise self.error from exc
            if message is not None and message["type"] in ("message", "smessage"):
                return bytes(message["data"])
        raise StopAsyncIteration

    async def next_message(self) -> dict[str, Any] | None:
        """The connection's next message of any type, waiting for it."""
        if self._sharded:
            assert isinstance(self._pubsub, ClusterPubSub)
            return await self._pubsub.get_sharded_message(timeout=None)  # type: ignore[arg-type]
        message: dict[str, Any] | None = await self._pubsub.get_message(timeout=None)
        return message


def _ms(ttl_s: float) -> int:
    return max(1, round(ttl_s * 1000))


def _cluster_nodes(parts: SplitResult, credentials: str) -> tuple[str, list[ClusterNode]]:
    """The redis:// URL of a cluster URL's first node, and the other nodes it names."""
    first, *others = parts.netloc.rpartition("@")[2].split(",")
    scheme = "rediss" if parts.scheme.startswith("rediss") else "redis"
    netloc = f"{credentials}@{first}" if credentials else first
    url = parts._replace(scheme=scheme, netloc=netloc, path="").geturl()
    nodes = []
    for node in others:
        host, _, port = node.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a cluster node must be host:port, not {node!r}")
        nodes.append(ClusterNode(host, int(port)))
    return url, nodes


def _without_option(url: str, name: str) -> str:
    parts = urlsplit(url)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != name]
    return parts._replace(query=urlencode(query)).geturl()
