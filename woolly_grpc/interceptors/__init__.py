"""The server's interceptors, in the one place that orders them (outermost first)."""

from __future__ import annotations

from grpc import aio

from woolly_grpc.cache import ResultCache

from .cache import CACHED_METHODS, CacheInterceptor

__all__ = ["CACHED_METHODS", "CacheInterceptor", "build_interceptors"]


def build_interceptors(cache: ResultCache | None) -> list[aio.ServerInterceptor]:
    """The interceptor chain; the cache is innermost, so that outer layers see hits too.

    Args:
        cache: The result cache, or None when it is turned off.
    """
    chain: list[aio.ServerInterceptor] = []
    if cache is not None:
        chain.append(CacheInterceptor(cache))
    return chain
