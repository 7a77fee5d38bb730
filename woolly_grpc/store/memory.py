"""MemoryStore: the in-process Store a single replica runs, bounded in bytes and by TTL."""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from .base import Append, Claim, Publish, Put, StoreError, Write

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
_MIN_TTL_S = 0.001
"""Shortest TTL, as in RedisStore (PX 1), so both backends treat ttl_s <= 0 alike."""


@dataclass(slots=True)
class _Item:
    data: bytes | list[bytes]
    """A value, or the entries of a log."""
    expires_at: float
    size: int
    """Bytes counted against `max_bytes`: the key and the value or every log entry."""


class MemoryStore:
    """An in-process Store: values and logs in one LRU map bounded by `max_bytes`, with TTLs.

    Least recently used keys (get and read count as use) are evicted when a write would go
    over `max_bytes`; expired keys are dropped on access and purged as time passes, so their
    memory is freed even if nobody asks for them again. A value larger than `max_bytes` is
    not kept: `set` drops whatever the key held and stores nothing, because keeping it would
    evict everything else (the cache then simply misses). A log that outgrows `max_bytes` is
    dropped and `append` raises StoreError, since its readers can no longer be served.

    Pub/sub is in-process: each subscriber has its own queue of at most `max_pending`
    messages, and a subscriber that falls that far behind loses its oldest messages.

    Args:
        max_bytes: Bound on keys + values + log entries (Python's own overhead is not counted).
        clock: Monotonic seconds; tests pass a fake one to expire keys without waiting.
        max_pending: Messages queued per subscriber before the oldest are dropped.
        max_keys: Bound on the number of keys (least recently used go first); None = none.
    """

    kind = "memory"

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
        max_pending: int = 1024,
        max_keys: int | None = None,
    ) -> None:
        if max_bytes < 1 or max_pending < 1 or (max_keys is not None and max_keys < 1):
            raise ValueError("max_bytes, max_pending and max_keys must be at least 1")
        self.max_bytes = max_bytes
        self.max_keys = max_keys
        self._clock = clock
        self._max_pending = max_pending
        self._items: OrderedDict[str, _Item] = OrderedDict()
        """Least recently used first."""
        self._expiries: list[tuple[float, str]] = []
        """Heap of (expires_at, key); entries made stale by a later write are skipped."""
        self._nbytes = 0
        self._channels: dict[str, set[asyncio.Queue[bytes | None]]] = {}

    @property
    def nbytes(self) -> int:
        """Bytes counted against `max_bytes` now."""
        return self._nbytes

    async def get(self, key: str) -> bytes | None:
        """The value under `key`, or None when it is missing or expired."""
        item = self._live(key)
        if item is None:
            return None
        if isinstance(item.data, list):
            raise StoreError(f"{key!r} holds a log, not a value")
        return item.data

    async def set(self, key: str, value: bytes, *, ttl_s: float) -> None:
        """Store `value` under `key` for `ttl_s` seconds (not at all if over `max_bytes`)."""
        now = self._clock()
        self._purge(now)
        self._drop(key)
        size = _size(key) + len(value)
        if size <= self.max_bytes:
            self._put(key, _Item(bytes(value), now + max(ttl_s, _MIN_TTL_S), size))

    async def append(
        self, key: str, entries: Sequence[bytes], *, ttl_s: float, renew: bool = True
    ) -> int:
        """Append to the log under `key`, renew its TTL, and return its new length.

        `renew=False` (a `write`'s `Append`) keeps an existing log's expiry.
        """
        item = self._live(key)
        if item is None:
            if not entries:
                return 0
            log: list[bytes] = []
            item = _Item(log, 0.0, _size(key))
        elif isinstance(item.data, list):
            log = item.data
        else:
            raise StoreError(f"{key!r} holds a value, not a log")
        self._drop(key)
        log.extend(bytes(entry) for entry in entries)
        item.size += sum(len(entry) for entry in entries)
        if item.size > self.max_bytes:
            raise StoreError(f"the log {key!r} outgrew max_bytes={self.max_bytes} and was dropped")
        if renew or not item.expires_at:  # a new log has none yet
            item.expires_at = self._clock() + max(ttl_s, _MIN_TTL_S)
        self._put(key, item)
        return len(log)

    async def read(self, key: str, start: int = 0) -> list[bytes]:
        """The log entries from index `start` on; [] when there are none."""
        item = self._live(key)
        if item is None:
            return []
        if not isinstance(item.data, list):
            raise StoreError(f"{key!r} holds a value, not a log")
        return item.data[max(start, 0) :]

    async def claim(self, key: str, holder: str, *, ttl_s: float) -> bool:
        """Hold `key` for `holder` unless another holder has it."""
        item = self._live(key)
        if item is not None and item.data != holder.encode():
            return False
        await self.set(key, holder.encode(), ttl_s=ttl_s)
        return True

    async def write(self, batch: Sequence[Write]) -> list[bool]:
        """Do each operation in turn."""
        done: list[bool] = []
        for op in batch:
            match op:
                case Put():
                    await self.set(op.key, op.value, ttl_s=op.ttl_s)
                case Append():
                    await self.append(op.key, op.entries, ttl_s=op.ttl_s, renew=op.renew)
                case Publish():
                    await self.publish(op.channel, op.message)
                case Claim():
                    done.append(await self.claim(op.key, op.holder, ttl_s=op.ttl_s))
                    continue
            done.append(True)
        return done

    def steady_s(self) -> float:
        """In-process: it never fails."""
        return math.inf

    async def publish(self, channel: str, message: bytes) -> None:
        """Queue `message` for every current subscriber of `channel`."""
        for queue in self._channels.get(channel, ()):
            _offer(queue, bytes(message))

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """Receive the messages published on `channel` while the block is open."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(self._max_pending)
        subscribers = self._channels.setdefault(channel, set())
        subscribers.add(queue)
        messages = _Messages(queue)
        try:
            yield messages
        finally:
            messages.ended = True
            subscribers.discard(queue)
            if not subscribers and self._channels.get(channel) is subscribers:
                del self._channels[channel]

    async def ping(self) -> float:
        """Always reachable: 0.0 seconds."""
        return 0.0

    async def close(self) -> None:
        """Free everything; open subscriptions raise StoreError when next read."""
        self._items.clear()
        self._expiries.clear()
        self._nbytes = 0
        for subscribers in self._channels.values():
            for queue in subscribers:
                _offer(queue, None)
        self._channels.clear()

    def _live(self, key: str) -> _Item | None:
        now = self._clock()
        self._purge(now)
        item = self._items.get(key)
        if item is None:
            return None
        if item.expires_at <= now:
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return item

    def _put(self, key: str, item: _Item) -> None:
        self._items[key] = item
        self._nbytes += item.size
        heapq.heappush(self._expiries, (item.expires_at, key))
        if len(self._expiries) > 2 * len(self._items) + 64:
            # Logs push an entry per append; rebuild before stale entries outweigh live ones.
            self._expiries = [(i.expires_at, k) for k, i in self._items.items()]
            heapq.heapify(self._expiries)
        too_many = self.max_keys if self.max_keys is not None else len(self._items)
        while self._nbytes > self.max_bytes or len(self._items) > too_many:
            # Never the new item itself: it fits, and it is the most recent.
            self._drop(next(iter(self._items)))

    def _drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._nbytes -= item.size

    def _purge(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, key = heapq.heappop(self._expiries)
            item = self._items.get(key)
            if item is not None and item.expires_at <= now:
                self._drop(key)


class _Messages:
    """One subscriber's messages; None in the queue means the store was closed."""

    def __init__(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._queue = queue
        self.ended = False

    def __aiter__(self) -> _Messages:
        return self

    async def __anext__(self) -> bytes:
        if self.ended:
            raise StopAsyncIteration
        message = await self._queue.get()
        if message is None:
            self._queue.put_nowait(None)  # stays closed for the next read
            raise StoreError("the memory store was closed")
        return message


def _offer(queue: asyncio.Queue[bytes | None], message: bytes | None) -> None:
    if queue.full():
        queue.get_nowait()  # a slow subscriber loses its oldest message, memory stays bounded
    queue.put_nowait(message)


def _size(key: str) -> int:
    return len(key.encode())
