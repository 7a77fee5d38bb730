"""The cases of `bench.suite`: each measures woolly, the bare echo and the peer, then reports."""

from ._base import SERVICE, CpuClock, Plan, Servers, fresh, woolly_request
from .hits import hits
from .misses import coalescing, redis
from .streams import crowd, live_streams
from .workers import workers

__all__ = [
    "SERVICE",
    "CpuClock",
    "Plan",
    "Servers",
    "coalescing",
    "crowd",
    "fresh",
    "hits",
    "live_streams",
    "redis",
    "woolly_request",
    "workers",
]
