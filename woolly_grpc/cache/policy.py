"""What one call may do with the result cache, read from its `options` once."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

from google.protobuf import duration_pb2

from woolly_grpc._gen.woolly.v1 import agent_pb2
from woolly_grpc.core import FieldViolation, InvalidInput

from .entries import Entry

_MAX_DURATION_S = 315_576_000_000
"""google.protobuf.Duration's range, about 10,000 years (timedelta cannot hold much more)."""

_BY_POLICY = {
    #                                    read   write  only_cached
    agent_pb2.CACHE_POLICY_UNSPECIFIED: (True, True, False),
    agent_pb2.CACHE_POLICY_BYPASS: (False, False, False),
    agent_pb2.CACHE_POLICY_REFRESH: (False, True, False),
    agent_pb2.CACHE_POLICY_ONLY_IF_CACHED: (True, True, True),
}


@dataclass(frozen=True)
class CachePolicy:
    """A call's use of the result cache: the whole call's answer, and each chain step's."""

    read: bool
    """Answer from the cache when it has an acceptable entry."""
    write: bool
    """Store a fresh result."""
    only_cached: bool
    """Never run: a miss is NOT_FOUND."""
    ttl_s: float
    """How long a fresh result stays cached."""
    max_age_s: float = 0.0
    """Accept only entries younger than this; 0 = any age."""

    @classmethod
    def of(
        cls,
        options: agent_pb2.RunOptions,
        default_ttl_s: float,
        max_ttl_s: float = math.inf,
    ) -> CachePolicy:
        """The policy a call's options ask for.

        Raises:
            InvalidInput: a negative or malformed `cache_ttl` / `cache_max_age`, or a
                `cache_ttl` above `max_ttl_s`.
        """
        policy = _known(options.cache_policy)
        if not (options.HasField("cache_ttl") or options.HasField("cache_max_age")):
            return _plain(policy, default_ttl_s)  # the usual call: nothing to check
        read, write, only_cached = _BY_POLICY[policy]
        problems = {
            name: problem
            for name in ("cache_ttl", "cache_max_age")
            if (problem := _duration_problem(getattr(options, name)))
        }
        ttl_s = 0.0 if "cache_ttl" in problems else options.cache_ttl.ToTimedelta().total_seconds()
        if ttl_s > max_ttl_s:
            # Refused rather than cut short (CONTRACT §2): the caller learns its entry would
            # not live as long as it asked.
            problems["cache_ttl"] = f"is above the server's maximum of {max_ttl_s:,.0f} s"
        if problems:
            raise InvalidInput([FieldViolation(f"options.{f}", p) for f, p in problems.items()])
        ttl_s = ttl_s or default_ttl_s
        max_age_s = options.cache_max_age.ToTimedelta().total_seconds()
        return cls(read, write, only_cached, ttl_s, max_age_s)

    def fresh(self) -> CachePolicy:
        """The policy of a rerun that must not reuse results (RetryRun): write, never read."""
        return replace(self, read=False, only_cached=False)

    def accepts(self, entry: Entry, now: float) -> bool:
        """Whether `entry` is young enough for this call."""
        return self.max_age_s <= 0 or entry.age_s(now) <= self.max_age_s


def _known(policy: int) -> agent_pb2.CachePolicy.ValueType:
    """The policy, or UNSPECIFIED (read and write) for a number this server does not know."""
    if policy in _BY_POLICY:
        return agent_pb2.CachePolicy.ValueType(policy)
    return agent_pb2.CACHE_POLICY_UNSPECIFIED


@functools.cache  # bounded: four policies, and the server's one default TTL
def _plain(policy: agent_pb2.CachePolicy.ValueType, ttl_s: float) -> CachePolicy:
    """The policy of a call that gives no durations, made once."""
    return CachePolicy(*_BY_POLICY[policy], ttl_s)


def _duration_problem(value: duration_pb2.Duration) -> str | None:
    seconds, nanos = value.seconds, value.nanos
    if abs(seconds) > _MAX_DURATION_S or abs(nanos) > 999_999_999 or seconds * nanos < 0:
        return (
            "is not a valid Duration (seconds at most 315,576,000,000, nanos at most 999,999,999, "
            "both of the same sign)"
        )
    return "must not be negative" if seconds < 0 or nanos < 0 else None
