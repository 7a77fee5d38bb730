"""The result cache: entries under keys in a Store that may be down, slow or wrong.

The gRPC side is `interceptors/caching.py`; chain steps are cached one by one through
`steps.StepResultCache`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from woolly_grpc.calls import CacheOutcome
from woolly_grpc.core import PROMPT_VERSION
from woolly_grpc.store import MemoryStore, Store, StoreError

from .entries import ENTRY_FORMAT, Entry, decode_entry, encode_entry, key_for

if TYPE_CHECKING:
    from prometheus_client import Counter

    from woolly_grpc.observability.metrics import Metrics

_log = logging.getLogger(__name__)


@dataclass
class CacheStats:
    """Counts since start (the status report's hit ratio; store failures)."""

    hits: int = 0
    misses: int = 0
    errors: int = 0


class ResultCache:
    """Reads and writes entries in a Store that may be down, slow or wrong: never fails a call.

    A shared (Redis) store can be fronted by `hot`, an in-process copy of the entries this
    replica read or wrote in the last `hot_ttl_s` seconds: a hot key then costs no round trip.
    Entries under one key only change when a REFRESH call rewrites them, so the copy can be at
    most `hot_ttl_s` behind another replica's rewrite; it never outlives the entry itself.

    Args:
        store: Where entries live (`memory://` or Redis).
        model: The configured model name; part of every key.
        default_ttl_s: How long entries live when the call does not say.
        max_ttl_s: The longest a call may ask for; nothing is stored for longer.
        metrics: Where hits, misses and store errors are counted for /metrics.
        clock: Wall-clock seconds (entries carry their creation time across replicas).
        hot: The in-process copy in front of `store` (None: every lookup asks the store).
        hot_ttl_s: How long an entry stays in `hot`.
    """

    def __init__(
        self,
        store: Store,
        *,
        model: str,
        default_ttl_s: float,
        max_ttl_s: float = math.inf,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        hot: MemoryStore | None = None,
        hot_ttl_s: float = 0.0,
    ) -> None:
        self.store = store
        self.hot = hot if hot_ttl_s > 0 else None
        self.hot_ttl_s = hot_ttl_s
        self.model = model
        self.default_ttl_s = default_ttl_s
        self.max_ttl_s = max_ttl_s
        self.metrics = metrics
        self.clock = clock
        self.stats = CacheStats()
        self._failing = False
        self._hits: dict[str, Counter] = {}
        self._misses: dict[str, Counter] = {}

    def key(self, scope: str, payload: bytes, tenant: str, extras: bytes = b"") -> str:
        """The key of a request: scope (method or step), payload, tenant, model, prompt version.

        `extras` is whatever else the answer depends on (saved agents' revisions). The entry
        format is in the key too, so replicas of two versions never read each other's entries.
        """
        parts = (scope, payload, tenant, self.model, PROMPT_VERSION, ENTRY_FORMAT)
        return key_for(*parts, extras) if extras else key_for(*parts)

    async def get(self, key: str) -> Entry | None:
        """The entry under `key`; None when missing, corrupt, or the store is failing."""
        if self.hot is not None and (raw := await self.hot.get(key)) is not None:
            return decode_entry(raw)
        try:
            raw = await self.store.get(key)
        except StoreError as exc:
            self._failed("read", exc)
            return None
        self._recovered()
        if raw is None:
            return None
        entry = decode_entry(raw)
        if entry is None:
            # Treated as a miss; the fresh result overwrites it.
            _log.warning("cache entry %s… is corrupt; recomputing it", key[:12])
        elif self.hot is not None and (remaining_s := entry.expires_at - self.clock()) > 0:
            # Never past the entry's own expiry, whatever TTL the writing call gave it.
            await self.hot.set(key, raw, ttl_s=min(self.hot_ttl_s, remaining_s))
        return entry

    async def put(self, key: str, messages: Sequence[bytes], ttl_s: float) -> None:
        """Store the responses of a successful call (failures are logged and counted).

        Never for longer than `max_ttl_s`: a retried run's request was checked against the
        maximum of its day, which may have been lowered since.
        """
        ttl_s = min(ttl_s, self.max_ttl_s)
        now = self.clock()
        raw = encode_entry(Entry(tuple(messages), now, now + ttl_s))
        if self.hot is not None:
            await self.hot.set(key, raw, ttl_s=min(ttl_s, self.hot_ttl_s))
        try:
            await self.store.set(key, raw, ttl_s=ttl_s)
        except StoreError as exc:
            self._failed("write", exc)
            return
        self._recovered()

    def count(self, outcome: CacheOutcome, label: str) -> None:
        """Count a call's outcome under its agent label."""
        if outcome == "hit":
            self.stats.hits += 1
            counters, family = self._hits, self.metrics.cache_hits
        elif outcome in ("miss", "coalesced"):
            self.stats.misses += 1
            counters, family = self._misses, self.metrics.cache_misses
        else:
            return
        if (counter := counters.get(label)) is None:  # labels() locks: once per label
            counter = counters[label] = family.labels(label)
        counter.inc()

    async def close(self) -> None:
        """Close the store (the run journal shares it, so this comes last)."""
        await self.store.close()

    @property
    def failing(self) -> bool:
        """Whether the store's last operation failed (it is back once one succeeds)."""
        return self._failing

    def _failed(self, operation: str, exc: StoreError) -> None:
        self.stats.errors += 1
        self.metrics.cache_errors.labels(operation).inc()
        if not self._failing:
            _log.warning("cache %s failed, serving uncached until it recovers: %s", operation, exc)
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            _log.info("cache store reachable again; caching resumed")
        self._failing = False
