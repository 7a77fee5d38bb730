"""The server's interceptors, in the one place that orders them (outermost first)."""

from __future__ import annotations

from grpc import aio

from woolly_grpc.cache import ResultCache

from .cache import CACHED_METHODS, CacheInterceptor

__all__ = ["CACHED_METHODS", "CacheInterceptor", "build_interceptors"]


def build_interceptors(cache: ResultCache) -> list[aio.ServerInterceptor]:
    """The interceptor chain: the cache innermost, so that outer layers see hits too."""
    return [CacheInterceptor(cache)]
