"""The gRPC server's channel arguments, and how many connections this process may hold."""

from __future__ import annotations

import contextlib
import resource
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from woolly_grpc.config import Settings


def server_options(settings: Settings, connections: int) -> list[tuple[str, int]]:
    """The grpc server's options: message sizes, connection budget, timeouts, keepalive."""
    options = [
        # A taken port must fail start-up, not be shared silently with another process; workers
        # share theirs, once the supervisor has made sure it was free (`workers/supervisor.py`).
        ("grpc.so_reuseport", int(settings.workers > 1)),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_allowed_incoming_connections", connections),
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        ("grpc.server_handshake_timeout_ms", _ms(settings.handshake_timeout_s)),
        ("grpc.max_connection_idle_ms", _ms(settings.connection_idle_s)),
        # Ping quiet connections, so that a peer gone without a FIN frees its calls and descriptor.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        # Clients may ping idle connections to keep them open, but not more than every 10 s.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ]
    if settings.connection_max_age_s:
        options.append(("grpc.max_connection_age_ms", _ms(settings.connection_max_age_s)))
        options.append(("grpc.max_connection_age_grace_ms", _ms(settings.shutdown_grace_s)))
    return options


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


_RESERVED_DESCRIPTORS = 320
"""Descriptors kept for Redis' pool (256), the database, logs and the listening sockets."""


def connection_budget(settings: Settings) -> int:
    """How many client connections this process may hold (`WOOLLY_MAX_CONNECTIONS`).

    Raises the soft descriptor limit to the hard one first: the default soft limit (often
    1,024) is far below what a server needs, and running out of descriptors stops `accept`,
    health checks included.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if settings.max_connections:
        return settings.max_connections
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(64, (soft - _RESERVED_DESCRIPTORS) // 2)
