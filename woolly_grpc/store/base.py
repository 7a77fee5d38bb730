"""The Store protocol: what a replica needs from memory or Redis, and the one error it raises."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, TypeAlias


class StoreError(Exception):
    """The backend failed: down, too slow, or it answered garbage. Callers go on without it.

    Every backend raises this, and only this, for its own failures (the cause is chained), so
    a caller needs one `except` and never sees a redis or socket exception.
    """


@dataclass(frozen=True)
class Put:
    """`set` as part of a `write`."""

    key: str
    value: bytes
    ttl_s: float


@dataclass(frozen=True)
class Append:
    """`append` as part of a `write`."""

    key: str
    entries: Sequence[bytes]
    ttl_s: float
    renew: bool = True
    """False keeps an existing log's expiry as it is (one command less on Redis), for a writer
    that renews it only now and then; a log this append creates gets `ttl_s` all the same."""


@dataclass(frozen=True)
class Publish:
    """`publish` as part of a `write`."""

    channel: str
    message: bytes


@dataclass(frozen=True)
class Claim:
    """`claim` as part of a `write`."""

    key: str
    holder: str
    ttl_s: float


Write: TypeAlias = Put | Append | Publish | Claim
"""One operation of a `write` batch."""


class Store(Protocol):
    """Keys with a TTL, ordered logs and pub/sub, shared by the replicas that use one backend.

    `MemoryStore` serves a single replica; `RedisStore` lets several replicas share the result
    cache, the run logs and their notifications. No method blocks longer than the backend's
    operation timeout (reading a subscription waits for messages, as it should).
    """

    kind: str
    """`memory` or `redis`, for logs and the status snapshot."""

    async def get(self, key: str) -> bytes | None:
        """The value under `key`, or None when it is missing or expired (the result cache)."""
        ...

    async def set(self, key: str, value: bytes, *, ttl_s: float) -> None:
        """Store `value` under `key` for `ttl_s` seconds, replacing any value or log there."""
        ...

    async def append(self, key: str, entries: Sequence[bytes], *, ttl_s: float) -> int:
        """Append `entries` to the log under `key` and return its new length (run event logs).

        The log expires `ttl_s` seconds after its last append, so a run that is still
        writing never loses its beginning.
        """
        ...

    async def read(self, key: str, start: int = 0) -> list[bytes]:
        """The log entries from index `start` (0-based) on; [] when there are none.

        A reader that has seen `n` entries asks for `start=n` to get only the new ones.
        """
        ...

    async def claim(self, key: str, holder: str, *, ttl_s: float) -> bool:
        """Hold `key` for `holder` for `ttl_s` seconds: a lease (a run's owner, a settlement).

        True if the key was free or already `holder`'s (its TTL then starts again); False if
        another holder has it, which is left untouched. Atomic across replicas.
        """
        ...

    async def write(self, batch: Sequence[Write]) -> list[bool]:
        """Do every operation of `batch`, in order, in one round trip (not atomically).

        Returns one bool per operation: a Claim's answer, True for the others. A StoreError
        means some, all or none were done; the caller writes again.
        """
        ...

    def steady_s(self) -> float:
        """Seconds since an operation last failed here (inf if none ever did).

        A replica judges others' leases only once its own view of the store has been steady
        for a lease: a store that was away made every lease look lapsed.
        """
        ...

    async def publish(self, channel: str, message: bytes) -> None:
        """Send `message` to the current subscribers of `channel`, on every replica.

        Cross-replica notifications such as "run X changed" or "cancel run X"; a message
        published with no subscriber is lost, so the state itself lives in keys and logs.
        """
        ...

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Receive, in order, the messages published on `channel` while the block is open.

        Messages published after the block is entered are delivered; the subscription ends
        when the block exits. Iterating raises StoreError if the backend goes away.
        """
        ...

    async def ping(self) -> float:
        """The round-trip time in seconds, for health and status; StoreError when unreachable."""
        ...

    async def close(self) -> None:
        """Release connections and memory; the store is not used afterwards."""
        ...
