"""The standard health service: SERVING once ready, NOT_SERVING from the moment shutdown begins."""

from __future__ import annotations

import asyncio

from grpc import aio
from grpc_health.v1 import health_pb2

from tests.helpers import health_stub
from woolly_grpc.api import SERVICE_NAME
from woolly_grpc.config import Settings
from woolly_grpc.server import build, start, stop
from woolly_grpc.testing import RunningServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_serving_for_the_server_and_the_service(server: RunningServer) -> None:
    health = health_stub(server.channel)
    for service in ("", "woolly.v1.AgentService"):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == SERVING


async def test_not_serving_as_soon_as_shutdown_begins(settings: Settings) -> None:
    app = build(settings.model_copy(update={"host": "127.0.0.1", "port": 0}))
    await start(app)
    async with aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        health = health_stub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert (await watch.read()).status == SERVING

        stopping = asyncio.create_task(stop(app, grace=5))
        assert (await watch.read()).status == NOT_SERVING
        await stopping
