"""The HTTP server of /metrics."""

from __future__ import annotations

import asyncio
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server


class MetricsEndpoint:
    """prometheus-client's own HTTP server, serving one registry on `/metrics`."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        server, thread = start_http_server(port, host, registry=registry)
        self._server: WSGIServer = server
        self._thread: Thread = thread

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_port)

    async def close(self) -> None:
        """Stop serving (its loop polls every 0.5 s, so this waits in a thread) and unbind."""
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()
        await asyncio.to_thread(self._thread.join, 5.0)
