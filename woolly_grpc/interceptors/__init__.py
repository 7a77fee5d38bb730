"""The server's interceptors, in the one place that orders them (outermost first)."""

from __future__ import annotations

from grpc import aio
from opentelemetry.trace import Tracer

from woolly_grpc.cache import ResultCache
from woolly_grpc.observability.metrics import Metrics
from woolly_grpc.runs import ReplaySlots

from .auth import AuthInterceptor
from .caching import CACHED_METHODS, CachingInterceptor, KeyExtras
from .decoding import DecodingInterceptor
from .keys import ApiKeys, ApiKeysError, KeyFile, KeySource
from .metrics import MetricsInterceptor
from .tracing import TracingInterceptor

__all__ = [
    "CACHED_METHODS",
    "ApiKeys",
    "ApiKeysError",
    "AuthInterceptor",
    "CachingInterceptor",
    "DecodingInterceptor",
    "KeyFile",
    "KeySource",
    "MetricsInterceptor",
    "TracingInterceptor",
    "build_interceptors",
]


def build_interceptors(
    cache: ResultCache | None,
    *,
    replays: ReplaySlots,
    metrics: Metrics | None = None,
    key_extras: KeyExtras | None = None,
    api_keys: KeySource | None = None,
    tracer: Tracer | None = None,
) -> list[aio.ServerInterceptor]:
    """The interceptor chain, outermost first: tracing, metrics, auth, decoding, cache.

    Tracing is outermost so that its span covers the whole call and its trace id is known to
    the access-log line, which metrics writes. Metrics times cache hits too.

    Auth sits inside metrics, so refused calls are counted and logged, and outside the cache,
    whose keys include the tenant it sets. Decoding (a payload that does not parse is
    INVALID_ARGUMENT) always runs, inside metrics so those calls are counted too, and after auth
    so that a caller without a key learns nothing else.

    Args:
        cache: The result cache, or None when it is turned off.
        replays: Bounds the cache hits replayed at once (with WatchRun).
        metrics: Where the gRPC metrics go; None leaves the metrics interceptor out.
        key_extras: What cache keys add beyond the request (saved agents' revisions).
        api_keys: The keys callers must present (fixed, or a followed key file); None turns
            authentication off.
        tracer: Where the RPCs' spans go; None (tracing off) leaves the tracing interceptor out.
    """
    chain: list[aio.ServerInterceptor] = []
    if tracer is not None:
        chain.append(TracingInterceptor(tracer))
    if metrics is not None:
        chain.append(MetricsInterceptor(metrics))
    if api_keys is not None:
        chain.append(AuthInterceptor(api_keys))
    chain.append(DecodingInterceptor())
    if cache is not None:
        chain.append(CachingInterceptor(cache, key_extras, replays))
    return chain
