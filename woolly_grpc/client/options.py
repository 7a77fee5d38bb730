"""How the client calls: its channel's retry policy, and the options a run request carries.

Retries. The channel carries a gRPC service config whose `retryPolicy` retries UNAVAILABLE for
the idempotent reads only (GetRun, ListAgentTypes, GetAgent, ListAgents, GetServerStatus): asking
twice changes nothing. Execute, StreamExecute, ExecuteChain and RetryRun are *not* retried
blindly: UNAVAILABLE does not say whether the server had already started the run, and a second
attempt would start a second run (a second model bill, and a second answer if the cache is
bypassed). Streams instead resume the run they already have with `WatchRun(after_sequence)`
(`resume.follow_run`), which never reruns anything; a unary Execute that fails with UNAVAILABLE
is the caller's decision to repeat (or use a stream, or `detach` and GetRun).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypedDict

from woolly_grpc._gen.woolly.v1 import agent_pb2
from woolly_grpc.api import SERVICE_NAME

RETRIED_METHODS = ("GetRun", "ListAgentTypes", "GetAgent", "ListAgents", "GetServerStatus")
"""Idempotent reads: retried on UNAVAILABLE by the channel itself."""

SERVICE_CONFIG: dict[str, Any] = {
    "methodConfig": [
        {
            "name": [{"service": SERVICE_NAME, "method": method} for method in RETRIED_METHODS],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.1s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.enable_retries", 1),
    ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
]
"""Options of every channel a WoollyClient opens."""


@dataclass(frozen=True)
class SavedAgent:
    """A saved agent (see `WoollyClient.create_agent`) as a step of `chain`."""

    id: str


class RunOptionsArgs(TypedDict, total=False):
    """Keywords of `WoollyClient.execute`, `stream` and `chain` that make the `RunOptions`."""

    cache_policy: str | int
    """`bypass`, `refresh` or `only_if_cached`; unset reads and writes the cache."""
    cache_ttl: float | timedelta
    """How long a fresh result stays cached (seconds)."""
    cache_max_age: float | timedelta
    """Accept only a cached result younger than this (seconds)."""
    detach: bool
    """Keep the run going after the caller leaves (then `get_run` / `watch_run`)."""


def run_options(
    *,
    cache_policy: str | int | None = None,
    cache_ttl: float | timedelta | None = None,
    cache_max_age: float | timedelta | None = None,
    detach: bool = False,
) -> agent_pb2.RunOptions:
    """`RunOptions` from keywords.

    Args:
        cache_policy: `bypass`, `refresh`, `only_if_cached` (or the enum name or value);
            None reads and writes the cache.
        cache_ttl: How long a fresh result stays cached (seconds or a timedelta).
        cache_max_age: Accept only a cached entry younger than this.
        detach: Keep the run going after the caller leaves.

    Raises:
        ValueError: for an unknown cache policy.
    """
    options = agent_pb2.RunOptions(detach=detach)
    if isinstance(cache_policy, int):
        options.cache_policy = agent_pb2.CachePolicy.ValueType(cache_policy)
    elif cache_policy is not None:
        name = cache_policy.upper().removeprefix("CACHE_POLICY_")
        try:
            options.cache_policy = agent_pb2.CachePolicy.Value(f"CACHE_POLICY_{name}")
        except ValueError:
            raise ValueError(f"unknown cache policy {cache_policy!r}") from None
    for field, value in (("cache_ttl", cache_ttl), ("cache_max_age", cache_max_age)):
        if value is not None:
            delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
            getattr(options, field).FromTimedelta(delta)
    return options
