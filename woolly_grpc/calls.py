"""What the interceptors and the servicer learn about one RPC: the package's only ContextVar.

Each field has one writer. The auth interceptor sets `tenant`; the caching interceptor sets
`cache_key`, `cache_outcome` and records `sent`; the servicer sets `run_id` and `joined`. The
metrics interceptor reads them all for the call's access-log line. Nothing below the servicer
reads this module: the servicer passes the tenant and the cache policy on as arguments, and run
tasks start in an empty context (`runs.manager`), so a run never depends on what its first
caller's call happened to carry.
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
