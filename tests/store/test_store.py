from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from tests.helpers import assert_eventually
from tests.support.redis_server import CLUSTER, with_options
from woolly_grpc.store import MemoryStore, RedisStore, StoreError, open_store
from woolly_grpc.store.base import Append, Claim, Publish, Put

EVERY_BYTE = bytes(range(256))


async def next_message(messages: AsyncIterator[bytes]) -> bytes:
    async with asyncio.timeout(5):  # a bound, so a lost message fails here rather than hangs
        return await anext(messages)


# Every backend: the `store` fixture runs each test on memory and on a real redis-server.


async def test_set_get_overwrite(store):
    assert await store.get("k") is None
    await store.set("k", b"one", ttl_s=60)
    assert await store.get("k") == b"one"
    await store.set("k", b"two", ttl_s=60)
    assert await store.get("k") == b"two"


async def test_values_and_log_entries_are_binary(store):
    await store.set("every byte", EVERY_BYTE, ttl_s=60)
    await store.set("empty", b"", ttl_s=60)
    await store.set("ключ/🔑", b"v", ttl_s=60)
    assert await store.get("every byte") == EVERY_BYTE
    assert await store.get("empty") == b""  # empty, not missing
    assert await store.get("ключ/🔑") == b"v"
    assert await store.append("log", [EVERY_BYTE, b""], ttl_s=60) == 2
    assert await store.read("log") == [EVERY_BYTE, b""]


async def test_values_expire_after_their_ttl(store, elapse):
    await store.set("short", b"v", ttl_s=0.05)
    await store.set("long", b"v", ttl_s=60)
    await store.set("at once", b"v", ttl_s=0)  # held for the shortest TTL, one millisecond
    await elapse(0.05)
    assert await store.get("short") is None
    assert await store.get("at once") is None
    assert await store.get("long") == b"v"


async def test_logs_append_and_read_from_an_offset(store):
    assert await store.read("log") == []
    assert await store.append("log", [b"a"], ttl_s=60) == 1
    assert await store.append("log", [b"b", b"c"], ttl_s=60) == 3
    assert await store.append("log", [], ttl_s=60) == 3
    assert await store.read("log") == [b"a", b"b", b"c"]
    assert await store.read("log", 1) == [b"b", b"c"]
    assert await store.read("log", 3) == []
    assert await store.read("log", 9) == []
    assert await store.read("log", -5) == [b"a", b"b", b"c"]  # a negative start means 0
    assert await store.append("nothing", [], ttl_s=60) == 0
    assert await store.read("nothing") == []


async def test_append_renews_the_ttl_of_the_log(store, elapse):
    await store.append("renewed", [b"a"], ttl_s=0.5)
    await store.append("not renewed", [b"a"], ttl_s=0.5)
    assert await store.append("renewed", [b"b"], ttl_s=60) == 2
    await elapse(0.5)
    assert await store.read("not renewed") == []
    assert await store.read("renewed") == [b"a", b"b"]


async def test_a_value_is_not_a_log(store):
    await store.set("value", b"v", ttl_s=60)
    await store.append("log", [b"e"], ttl_s=60)
    for wrong in (
        lambda: store.get("log"),
        lambda: store.read("value"),
        lambda: store.append("value", [b"e"], ttl_s=60),
    ):
        with pytest.raises(StoreError):
            await wrong()
    # The backend is fine (Redis answered, so its breaker stays closed); set replaces a log.
    await store.set("log", b"now a value", ttl_s=60)
    assert await store.get("log") == b"now a value"


async def test_a_claim_holds_a_key_for_one_holder_until_it_lapses(store, elapse):
    assert await store.claim("lease", "a", ttl_s=0.2)
    assert await store.claim("lease", "a", ttl_s=0.2), "its holder renews it"
    assert not await store.claim("lease", "b", ttl_s=60), "another holder is refused"
    assert await store.get("lease") == b"a", "and leaves it untouched"
    await elapse(0.2)
    assert await store.claim("lease", "b", ttl_s=60), "a lapsed lease is free"
    assert not await store.claim("lease", "a", ttl_s=60)


async def test_claims_race_and_exactly_one_wins(store):
    won = await asyncio.gather(*(store.claim("race", f"r{i}", ttl_s=60) for i in range(8)))
    assert won.count(True) == 1


async def test_a_write_does_a_batch_in_order_and_answers_its_claims(store):
    await store.claim("taken", "other", ttl_s=60)
    async with store.subscribe("news") as messages:
        done = await store.write(
            [
                Put("k", b"v", 60),
                Append("log", [b"a", b"b"], 60),
                Append("log", [], 60),  # renews the TTL, adds nothing
                Claim("free", "me", 60),
                Claim("taken", "me", 60),
                Publish("news", b"written"),
            ]
        )
        assert await next_message(messages) == b"written"
    assert done == [True, True, True, True, False, True]
    assert await store.get("k") == b"v"
    assert await store.read("log") == [b"a", b"b"]
    assert await store.get("free") == b"me" and await store.get("taken") == b"other"
    assert await store.write([]) == []


async def test_an_append_may_keep_the_logs_expiry_and_a_log_it_creates_still_gets_one(
    store, elapse
):
    # The run journal renews a log's TTL only on its first and last write: a write in between
    # neither renews nor drops it, a log such a write creates (Redis restarted empty) still
    # expires, and a claim's answer is still found among the rest.
    done = await store.write(
        [
            Append("log", [b"a"], 0.05),
            Append("log", [b"b"], 60, renew=False),
            Claim("lease", "me", 60),
            Append("log", [], 60, renew=False),
            Append("lost", [b"x"], 0.05, renew=False),
            Claim("lease", "other", 60),
        ]
    )
    assert done == [True, True, True, True, True, False]
    assert await store.read("log") == [b"a", b"b"]
    await store.write([Append("log", [b"c"], 60, renew=False)])
    await elapse(0.05)
    assert await store.read("log") == [], "the first append's TTL still held"
    assert await store.read("lost") == [], "the log it created got its TTL"


async def test_subscribers_get_what_is_published_after_they_subscribe(store):
    await store.publish("news", b"before anyone listens")
    async with store.subscribe("news") as first, store.subscribe("news") as second:
        await store.publish("sports", b"another channel")
        await store.publish("news", EVERY_BYTE)
        await store.publish("news", b"two")
        for messages in (first, second):
            assert await next_message(messages) == EVERY_BYTE
            assert await next_message(messages) == b"two"


async def test_a_subscription_ends_with_its_block(store):
    async with store.subscribe("news") as staying:
        async with store.subscribe("news") as leaving:
            pass
        await store.publish("news", b"after")
        assert await next_message(staying) == b"after"
    assert [message async for message in leaving] == []


async def test_closing_the_store_ends_its_subscriptions(store):
    async with store.subscribe("news") as messages:
        await store.close()
        with pytest.raises(StoreError):
            await next_message(messages)


async def test_ping_measures_a_round_trip(store):
    assert isinstance(await store.ping(), float)


# MemoryStore: bounded by bytes and TTL, with a fake clock.


async def test_memory_evicts_the_least_recently_used(clock):
    store = MemoryStore(max_bytes=30, clock=clock)  # three keys of 2 + 8 bytes
    for key in ("k1", "k2", "k3"):
        await store.set(key, b"12345678", ttl_s=60)
    assert store.nbytes == 30
    assert await store.get("k1") == b"12345678"  # k1 is now the most recently used
    await store.set("k4", b"12345678", ttl_s=60)
    assert await store.get("k2") is None
    assert store.nbytes == 30
    assert [await store.get(key) for key in ("k1", "k3", "k4")] == [b"12345678"] * 3


async def test_memory_logs_count_and_read_refreshes_them(clock):
    store = MemoryStore(max_bytes=30, clock=clock)
    await store.append("l1", [b"1234", b"5678"], ttl_s=60)  # 2 + 4 + 4 bytes
    await store.set("k2", b"12345678", ttl_s=60)
    await store.set("k3", b"12345678", ttl_s=60)
    assert await store.read("l1", 1) == [b"5678"]  # l1 is now the most recently used
    await store.set("k4", b"12345678", ttl_s=60)
    assert await store.get("k2") is None
    assert await store.append("l1", [b"12345678"], ttl_s=60) == 3  # l1 grows to 18 bytes
    assert await store.get("k3") is None
    assert store.nbytes == 28


async def test_memory_keeps_nothing_larger_than_its_bound(clock):
    store = MemoryStore(max_bytes=30, clock=clock)
    await store.set("small", b"v", ttl_s=60)
    await store.set("big", b"old", ttl_s=60)
    await store.set("big", bytes(40), ttl_s=60)  # not kept, and the old value is not served
    assert await store.get("big") is None
    assert await store.get("small") == b"v"
    await store.append("log", [bytes(10)], ttl_s=60)
    with pytest.raises(StoreError, match="outgrew"):
        await store.append("log", [bytes(20)], ttl_s=60)
    assert await store.read("log") == []
    assert store.nbytes == len("small") + 1


async def test_memory_expires_on_the_clock_and_frees_what_nobody_reads(clock):
    store = MemoryStore(clock=clock)
    await store.set("k", b"v", ttl_s=0.05)
    clock.advance(0.049)
    assert await store.get("k") == b"v"
    clock.advance(0.002)
    assert await store.get("k") is None
    for i in range(100):
        await store.set(f"k{i}", bytes(100), ttl_s=1)
        await store.append(f"log{i}", [bytes(100)] * 3, ttl_s=1)
    clock.advance(1)
    await store.set("new", b"", ttl_s=60)
    assert store.nbytes == len("new")


async def test_memory_slow_subscriber_loses_its_oldest_messages(clock):
    store = MemoryStore(clock=clock, max_pending=2)
    async with store.subscribe("news") as messages:
        for message in (b"1", b"2", b"3"):
            await store.publish("news", message)
        assert [await next_message(messages), await next_message(messages)] == [b"2", b"3"]
    assert store._channels == {}  # unsubscribed


# RedisStore: the real server goes away and comes back.


def every_operation(store):
    async def subscribe():
        async with store.subscribe("news"):
            pass

    return {
        "get": lambda: store.get("k"),
        "set": lambda: store.set("k", b"v", ttl_s=60),
        "append": lambda: store.append("log", [b"e"], ttl_s=60),
        "read": lambda: store.read("log"),
        "publish": lambda: store.publish("news", b"m"),
        "claim": lambda: store.claim("lease", "me", ttl_s=60),
        "write": lambda: store.write([Put("k", b"v", 60)]),
        "subscribe": subscribe,
        "ping": store.ping,
    }


async def test_redis_outage_fails_fast_then_recovers(lone_server, lone_store, clock):
    connections = 0

    def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    await lone_store.set("k", b"v", ttl_s=60)
    await lone_server.kill()
    for name, operation in every_operation(lone_store).items():
        clock.advance(1.0)  # past the cooldown: each operation really tries
        with pytest.raises(StoreError, match=f"redis {name} at 127.0.0.1:"):
            await operation()
    # Something that accepts and hangs up, to count the attempts that reach the network.
    async with contextlib.AsyncExitStack() as fakes:
        for port in lone_server.ports:
            await fakes.enter_async_context(await asyncio.start_server(count, "127.0.0.1", port))
        clock.advance(1.0)
        with pytest.raises(StoreError, match="failed"):
            await lone_store.get("k")
        probed = connections
        # One try; a cluster client may ask each node it knows for the cluster's layout.
        assert probed == 1 or (CLUSTER and 1 <= probed <= 3)
        for operation in every_operation(lone_store).values():
            with pytest.raises(StoreError, match="skipped"):
                await operation()
        assert connections == probed  # the open breaker did not touch the network
    assert lone_store.steady_s() < 1.0, "it has just failed"
    await lone_server.start()
    clock.advance(1.0)
    assert await lone_store.get("k") is None  # the killed server kept nothing
    clock.advance(5.0)
    assert lone_store.steady_s() >= 6.0, "steady since its last failure"
    await lone_store.set("k", b"again", ttl_s=60)
    assert await lone_store.get("k") == b"again"


async def test_redis_unanswered_operations_time_out(lone_server, lone_store, clock):
    lone_server.pause()
    with pytest.raises(StoreError, match=r"redis get at .* failed: (no answer within|Timeout)"):
        await lone_store.get("k")
    lone_server.resume()
    clock.advance(1.0)
    assert await lone_store.get("k") is None


async def test_redis_subscription_fails_when_the_server_goes(lone_server, lone_store):
    async with lone_store.subscribe("news") as messages:
        await lone_server.kill()
        with pytest.raises(StoreError, match="subscription"):
            await next_message(messages)
        with pytest.raises(StoreError):  # and stays failed
            await next_message(messages)


async def test_redis_subscription_unsubscribes_on_exit(redis_store, redis_server):
    # A cluster's subscriptions are sharded (SSUBSCRIBE), counted apart.
    numsub = "PUBSUB SHARDNUMSUB" if CLUSTER else "PUBSUB NUMSUB"
    async with redis_server.client() as client:

        async def subscribers() -> object:
            return await client.execute_command(numsub, "woolly:news")

        async with redis_store.subscribe("news"):
            assert await subscribers() == [(b"woolly:news", 1)]

        async def unsubscribed() -> bool:
            return bool(await subscribers() == [(b"woolly:news", 0)])

        await assert_eventually(unsubscribed)


# open_store


async def test_open_store_by_url():
    memory = open_store("memory://?max_bytes=1024")
    assert isinstance(memory, MemoryStore) and memory.max_bytes == 1024
    assert isinstance(open_store("memory://"), MemoryStore)
    rediss = open_store("rediss://h:6380/0?ssl_cert_reqs=none&cooldown_s=2")
    assert isinstance(rediss, RedisStore) and rediss.kind == "redis"
    await rediss.close()
    redis = open_store("redis://user:s3cret@127.0.0.1:1/0?op_timeout_s=0.5")  # nothing listens
    with pytest.raises(StoreError, match=r"redis get at 127\.0\.0\.1:1/0 failed") as error:
        await redis.get("k")
    assert "s3cret" not in str(error.value) + repr(redis)
    await redis.close()
    cluster = open_store("redis+cluster://:s3cret@127.0.0.1:1,127.0.0.1:2?op_timeout_s=0.5")
    with pytest.raises(StoreError, match=r"redis get at 127\.0\.0\.1:1,127\.0\.0\.1:2 failed"):
        await cluster.get("k")
    assert "s3cret" not in repr(cluster)
    await cluster.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://db", "unsupported cache URL scheme 'postgresql://'; use memory://"),
        ("memory://?max_bytes=lots", "max_bytes must be an integer"),
        ("memory://?max_bytes=0", "at least 1"),
        ("memory://?maxbytes=1", "unknown memory:// option"),
        ("redis://h/0?op_timeout_s=soon", "op_timeout_s must be a number"),
        ("redis://h/0?op_timeout_s=0", "op_timeout_s must be positive"),
        ("redis+cluster://h:1,h2", "a cluster node must be host:port, not 'h2'"),
    ],
)
def test_open_store_rejects_bad_urls(url, message):
    with pytest.raises(ValueError, match=message):
        open_store(url)


async def test_redis_more_concurrent_operations_than_connections_wait_their_turn(redis_store):
    """A burst larger than the connection pool queues for connections instead of failing."""
    await redis_store.set("shared", b"value", ttl_s=60)
    answers = await asyncio.gather(*(redis_store.get("shared") for _ in range(500)))
    assert answers == [b"value"] * 500


async def test_redis_subscriptions_never_take_the_connections_operations_need(redis_server):
    store = RedisStore(with_options(redis_server.bare_url, max_connections=2), op_timeout_s=2.0)
    try:
        async with contextlib.AsyncExitStack() as stack:
            for index in range(4):  # twice the pool: each holds a connection while it lasts
                await stack.enter_async_context(store.subscribe(f"watch-{index}"))
            await store.set("still", b"served", ttl_s=60)
            assert await store.get("still") == b"served"
    finally:
        await store.close()


async def test_memory_bounded_by_count_keeps_that_many_keys(clock):
    store = MemoryStore(max_bytes=2**62, max_keys=2, clock=clock)
    await store.set("k1", b"v", ttl_s=60)
    await store.append("l2", [b"e"], ttl_s=60)
    await store.set("k3", b"v", ttl_s=60)
    assert await store.get("k1") is None
    assert await store.read("l2") == [b"e"] and await store.get("k3") == b"v"
