"""The client's channel: plaintext or TLS (mutual TLS with a client certificate), API key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

PathLike = str | Path


def open_channel(
    target: str,
    *,
    options: Sequence[tuple[str, Any]] = (),
    api_key: str | None = None,
    tls: bool = False,
    tls_ca: PathLike | None = None,
    tls_cert: PathLike | None = None,
    tls_key: PathLike | None = None,
) -> aio.Channel:
    """A channel to `target`.

    Args:
        target: `host:port`.
        options: gRPC channel options.
        api_key: Sent as `authorization: Bearer <key>` on every call.
        tls: Use TLS with the system's CA certificates (implied by any `tls_*` file).
        tls_ca: PEM CA bundle that signed the server's certificate.
        tls_cert: PEM client certificate chain, for servers that require one (mutual TLS).
        tls_key: PEM private key of `tls_cert`.
    """
    interceptors = bearer_interceptors(api_key) if api_key else None
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("give the client certificate and its key together")
    if not (tls or tls_ca or tls_cert):
        return aio.insecure_channel(target, options=list(options), interceptors=interceptors)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(tls_ca),
        private_key=_read(tls_key),
        certificate_chain=_read(tls_cert),
    )
    return aio.secure_channel(target, credentials, options=list(options), interceptors=interceptors)


def _read(path: PathLike | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def bearer_interceptors(key: str) -> list[aio.ClientInterceptor]:
    """Interceptors adding `authorization: Bearer <key>` to every unary and streaming call.

    Interceptors rather than call credentials: those are only sent over TLS, and a key must
    also reach a plaintext server (e.g. behind a TLS-terminating proxy). One object per kind:
    grpc files an interceptor under the first kind it is an instance of.
    """
    header = ("authorization", f"Bearer {key}")
    return [_UnaryBearer(header), _StreamBearer(header)]


def _with_header(details: aio.ClientCallDetails, header: tuple[str, str]) -> aio.ClientCallDetails:
    metadata = aio.Metadata(*(details.metadata or ()), header)
    return aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _UnaryBearer(aio.UnaryUnaryClientInterceptor):
    def __init__(self, header: tuple[str, str]) -> None:
        self._header = header

    async def intercept_unary_unary(
        self,
        continuation: Callable[[aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        """Send the key with a unary call."""
        return await continuation(_with_header(client_call_details, self._header), request)


class _StreamBearer(aio.UnaryStreamClientInterceptor):
    def __init__(self, header: tuple[str, str]) -> None:
        self._header = header

    async def intercept_unary_stream(
        self,
        continuation: Callable[[aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        """Send the key with a server-streaming call."""
        return await continuation(_with_header(client_call_details, self._header), request)
