"""The server's interceptors, in the one place that orders them (outermost first)."""

from __future__ import annotations

from grpc import aio

from woolly_grpc.cache import ResultCache
from woolly_grpc.observability import Metrics

from .cache import CACHED_METHODS, CacheInterceptor, KeyExtras
from .metrics import MetricsInterceptor

__all__ = ["CACHED_METHODS", "CacheInterceptor", "MetricsInterceptor", "build_interceptors"]


def build_interceptors(
    cache: ResultCache | None,
    *,
    metrics: Metrics | None = None,
    key_extras: KeyExtras | None = None,
) -> list[aio.ServerInterceptor]:
    """The interceptor chain, outermost first: metrics (it times cache hits too), then cache.

    Args:
        cache: The result cache, or None when it is turned off.
        metrics: Where the gRPC metrics go; None leaves the metrics interceptor out.
        key_extras: What cache keys add beyond the request (saved agents' revisions).
    """
    chain: list[aio.ServerInterceptor] = []
    if metrics is not None:
        chain.append(MetricsInterceptor(metrics))
    if cache is not None:
        chain.append(CacheInterceptor(cache, key_extras))
    return chain
