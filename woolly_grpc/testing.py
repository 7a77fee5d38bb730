"""Run a real server on a free loopback port, for tests, benchmarks and users' own tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from grpc import aio
from pydantic_ai.models import Model
from pydantic_ai.providers import infer_provider

from ._gen.woolly.v1.agent_service_pb2_grpc import AgentServiceStub
from .config import Settings
from .core.models import ProviderFactory
from .server import App, build, start, stop


@dataclass
class RunningServer:
    """A started server and a channel to it."""

    app: App
    target: str
    """`127.0.0.1:<port>`."""
    channel: aio.Channel
    stub: AgentServiceStub


@asynccontextmanager
async def running_server(
    settings: Settings,
    *,
    model: Model | None = None,
    provider_factory: ProviderFactory = infer_provider,
) -> AsyncIterator[RunningServer]:
    """Start a server on 127.0.0.1 and a free port; stop it (no grace) on exit.

    Args:
        settings: Its configuration; host and port are overridden.
        model: Serve this model instead of `settings.model` (e.g. a FunctionModel).
        provider_factory: Builds the model providers (e.g. one pointed at a test server).
    """
    local = settings.model_copy(update={"host": "127.0.0.1", "port": 0})
    app = build(local, model=model, provider_factory=provider_factory)
    await start(app)
    target = f"127.0.0.1:{app.port}"
    try:
        async with aio.insecure_channel(target) as channel:
            yield RunningServer(app, target, channel, AgentServiceStub(channel))
    finally:
        await stop(app, grace=0)
