"""The result cache: keys, entries, cache policy per call, and a store that may fail.

A cached entry is the list of serialized response messages of one successful call, so a hit
writes them straight back. The gRPC side lives in `interceptors/cache.py`; chain steps are
cached one by one through `StepResultCache`.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import Counter

from . import convert
from ._gen.woolly.v1 import agent_pb2
from .core import PROMPT_VERSION, AgentResult, RunRequest
from .observability import Metrics
from .store import MemoryStore, Store, StoreError

_log = logging.getLogger(__name__)

Outcome = Literal["hit", "miss", "bypass", "coalesced"]


@dataclass
class CallCache:
    """What the cache decided for one call; shared by the interceptor, servicer and run task."""

    key: str
    """The call's cache key (also the key that coalesces identical runs in flight)."""
    policy: agent_pb2.CachePolicy.ValueType
    ttl_s: float
    outcome: Outcome = "miss"
    sent: list[bytes] = field(default_factory=list)
    """The messages a streaming call has sent so far, as bytes (what a miss stores)."""


current_call: ContextVar[CallCache | None] = ContextVar("woolly_cache_call", default=None)
"""Set by the cache interceptor for cacheable calls; the run task inherits it."""

current_tenant: ContextVar[str] = ContextVar("woolly_tenant", default="")
"""The caller's tenant (empty without authentication); part of every key."""


@dataclass(frozen=True)
class Entry:
    """A cached call: its serialized responses, when produced and until when served (Unix)."""

    messages: tuple[bytes, ...]
    created_at: float
    expires_at: float

    def age_s(self, now: float) -> float:
        """Seconds since the entry was produced."""
        return max(0.0, now - self.created_at)


_MAGIC = b"WCE2"
_HEADER = struct.Struct("!4sddII")  # magic, created_at, expires_at, crc32 of the body, count
_LENGTH = struct.Struct("!I")


def encode_entry(entry: Entry) -> bytes:
    """Frame an entry; the CRC lets a reader tell garbage from a real entry."""
    body = b"".join(_LENGTH.pack(len(m)) + m for m in entry.messages)
    header = _HEADER.pack(
        _MAGIC, entry.created_at, entry.expires_at, zlib.crc32(body), len(entry.messages)
    )
    return header + body


def decode_entry(raw: bytes) -> Entry | None:
    """The entry framed in `raw`, or None if it is not a well-formed entry."""
    if len(raw) < _HEADER.size:
        return None
    magic, created_at, expires_at, crc, count = _HEADER.unpack_from(raw)
    body = memoryview(raw)[_HEADER.size :]
    if magic != _MAGIC or zlib.crc32(body) != crc:
        return None
    messages, offset = [], 0
    for _ in range(count):
        if offset + _LENGTH.size > len(body):
            return None
        (length,) = _LENGTH.unpack_from(body, offset)
        offset += _LENGTH.size
        messages.append(bytes(body[offset : offset + length]))
        offset += length
    return Entry(tuple(messages), created_at, expires_at) if offset == len(body) else None


def key_for(*parts: bytes | str) -> str:
    """SHA-256 over length-prefixed parts (so no two different part lists collide by joining)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(_LENGTH.pack(len(data)) + data)
    return digest.hexdigest()


@dataclass
class CacheStats:
    """Counts since start (for the status report's hit ratio)."""

    hits: int = 0
    misses: int = 0
    errors: int = 0
    corrupt: int = 0


class ResultCache:
    """Reads and writes entries in a Store that may be down, slow or wrong: never fails a call.

    A shared (Redis) store can be fronted by `local`, an in-process copy of the entries this
    replica read or wrote in the last `local_ttl_s` seconds: a hot key then costs no round trip.
    Entries under one key only change when a REFRESH call rewrites them, so the copy can be at
    most `local_ttl_s` behind another replica's rewrite; it never outlives the entry itself.

    Args:
        store: Where entries live (`memory://` or Redis).
        model: The configured model name; part of every key.
        default_ttl_s: How long entries live when the call does not say.
        metrics: Where hits, misses and store errors are counted for /metrics.
        clock: Wall-clock seconds (entries carry their creation time across replicas).
        local: The in-process copy in front of `store` (None: every lookup asks the store).
        local_ttl_s: How long an entry stays in `local`.
    """

    def __init__(
        self,
        store: Store,
        *,
        model: str,
        default_ttl_s: float,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        local: MemoryStore | None = None,
        local_ttl_s: float = 0.0,
    ) -> None:
        self.store = store
        self.local = local if local_ttl_s > 0 else None
        self.local_ttl_s = local_ttl_s
        self.model = model
        self.default_ttl_s = default_ttl_s
        self.metrics = metrics
        self.clock = clock
        self.stats = CacheStats()
        self._failing = False
        self._hits: dict[str, Counter] = {}
        self._misses: dict[str, Counter] = {}

    def key(self, scope: str, payload: bytes, extras: bytes = b"") -> str:
        """The key of a request: scope (method or step), payload, tenant, model, prompt version.

        `extras` is whatever else the answer depends on (saved agents' revisions). The entry
        format is in the key too, so replicas of two versions never read each other's entries.
        """
        parts = (scope, payload, current_tenant.get(), self.model, PROMPT_VERSION, _MAGIC)
        return key_for(*parts, extras) if extras else key_for(*parts)

    async def get(self, key: str) -> Entry | None:
        """The entry under `key`; None when missing, corrupt, or the store is failing."""
        if self.local is not None and (raw := await self.local.get(key)) is not None:
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
            self.stats.corrupt += 1
            _log.warning("cache entry %s… is corrupt; recomputing it", key[:12])
        elif self.local is not None and (remaining_s := entry.expires_at - self.clock()) > 0:
            # Never past the entry's own expiry, whatever TTL the writing call gave it.
            await self.local.set(key, raw, ttl_s=min(self.local_ttl_s, remaining_s))
        return entry

    async def put(self, key: str, messages: Sequence[bytes], ttl_s: float) -> None:
        """Store the responses of a successful call (failures are logged and counted)."""
        now = self.clock()
        raw = encode_entry(Entry(tuple(messages), now, now + ttl_s))
        if self.local is not None:
            await self.local.set(key, raw, ttl_s=min(ttl_s, self.local_ttl_s))
        try:
            await self.store.set(key, raw, ttl_s=ttl_s)
        except StoreError as exc:
            self._failed("write", exc)
            return
        self._recovered()

    def count(self, outcome: Outcome, label: str) -> None:
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


class StepResultCache:
    """Caches each chain step's result on its own (the core's StepCache).

    A chain re-run after a failure so replays the steps it finished. The key covers everything
    the step saw: repository, agent (and saved-agent revision), query, context, earlier results.
    """

    def __init__(self, cache: ResultCache) -> None:
        self.cache = cache

    def _key(self, request: RunRequest) -> str:
        saved = request.saved_agent
        payload = "\x00".join(
            [
                request.repository,
                request.agent_type.value,
                f"{saved.id}@{saved.revision}" if saved else "",
                request.query,
                convert.canonical_json(request.context),
                *(r.content for r in request.earlier_results),
            ]
        )
        return self.cache.key("step", payload.encode())

    async def get(self, request: RunRequest) -> AgentResult | None:
        """The cached result of this step, if the call's policy allows reading."""
        call = current_call.get()
        if call is None or call.policy != agent_pb2.CACHE_POLICY_UNSPECIFIED:
            return None
        entry = await self.cache.get(self._key(request))
        if entry is None or len(entry.messages) != 1:
            return None
        return convert.result_from_proto(agent_pb2.AgentResult.FromString(entry.messages[0]))

    async def put(self, request: RunRequest, result: AgentResult) -> None:
        """Remember a finished step, if the call's policy allows writing."""
        call = current_call.get()
        if call is None or call.policy == agent_pb2.CACHE_POLICY_BYPASS:
            return
        message = convert.result_to_proto(result)
        message.cached = True
        await self.cache.put(self._key(request), [message.SerializeToString()], call.ttl_s)
