"""TLS credentials of the server, from the settings' PEM files."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import grpc

from woolly_grpc.config import StartupError

if TYPE_CHECKING:
    from woolly_grpc.config import Settings


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' PEM files (client certificates required with a CA).

    None means plaintext. The files are checked with the ssl module first, so that a key that
    does not match its certificate stops start-up with one line rather than failing handshakes.
    """
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    try:
        chain, key = settings.tls_cert.read_bytes(), settings.tls_key.read_bytes()
        client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
        check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # An encrypted key gets an empty password (and fails) rather than a prompt on the tty.
        check.load_cert_chain(settings.tls_cert, settings.tls_key, password=lambda: b"")
        if settings.tls_client_ca is not None:
            check.load_verify_locations(settings.tls_client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"cannot use the TLS certificate and key: {exc}") from exc
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
