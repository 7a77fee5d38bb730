"""What the interceptors and the servicer learn about one RPC: the package's only ContextVar.

Each field has one writer. The auth interceptor sets `tenant`; the caching interceptor sets
`cache_key`, `cache_outcome`, `replayed`, `cache_age_s` and records `sent`; the servicer sets
`run_id` and `joined`; the tracing interceptor sets `trace_id`. The metrics interceptor reads
them for the call's access-log line, the tracing interceptor for the call's span. Nothing
below the servicer reads this module: the servicer passes the tenant and the cache policy on as
arguments, and run tasks start in an empty context (`runs.manager`), so a run never depends on
what its first caller's call happened to carry (a run's span parent is passed explicitly too).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

CacheOutcome = Literal["hit", "miss", "bypass", "coalesced"]


@dataclass
class Call:
    """The state of one RPC, shared by the coroutines that handle it (one task per call)."""

    tenant: str = ""
    """The caller's tenant (empty without authentication)."""
    cache_key: str | None = None
    """The result-cache key of a cacheable call that may run; identical calls share a run."""
    cache_outcome: CacheOutcome | None = None
    """How the result cache served the call (None: not a cacheable call, or the cache is off)."""
    sent: list[bytes] | None = None
    """A streamed miss's messages as sent (what the cache stores); None when not recording."""
    run_id: str = ""
    """The run this call started or joined."""
    joined: bool = False
    """Whether it joined an identical run in flight instead of starting one."""
    replayed: bytes | None = None
    """On a cache hit, the first stored message (it names the run that produced the answer)."""
    cache_age_s: int = 0
    """On a cache hit, the entry's age in whole seconds."""
    trace_id: str = ""
    """The call's trace id (hex), when tracing is on."""


_current: ContextVar[Call | None] = ContextVar("woolly_call", default=None)


def current() -> Call:
    """This call's state, created on first use.

    grpc runs every interceptor's behaviour and the servicer method of one call in one task, so
    whichever asks first creates the state the others see.
    """
    call = _current.get()
    if call is None:
        call = Call()
        _current.set(call)
    return call


def peek() -> Call | None:
    """This call's state if anything set it (reading it creates nothing)."""
    return _current.get()
