"""Run a real server on a free loopback port, for tests, benchmarks and users' own tests."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

from grpc import aio
from opentelemetry.sdk.trace import TracerProvider
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
    tracer_provider: TracerProvider | None = None,
) -> AsyncIterator[RunningServer]:
    """Start a server on 127.0.0.1 and a free port; stop it (no grace) on exit.

    Args:
        settings: Its configuration; host and port are overridden.
        model: Serve this model instead of `settings.model` (e.g. a FunctionModel).
        provider_factory: Builds the model providers (e.g. one pointed at a test server).
        tracer_provider: Trace the server's calls with it (shut down when the server stops).
    """
    local = settings.model_copy(update={"host": "127.0.0.1", "port": 0})
    app = build(
        local, model=model, provider_factory=provider_factory, tracer_provider=tracer_provider
    )
    await start(app)
    target = f"127.0.0.1:{app.port}"
    try:
        async with aio.insecure_channel(target) as channel:
            yield RunningServer(app, target, channel, AgentServiceStub(channel))
    finally:
        with _tasks_shown_if_slow(STOP_REPORT_S, "stopping the server"):
            await stop(app, grace=0)


STOP_REPORT_S = 20.0
"""A stop (no grace) takes a few seconds at most: past this, show what it waits for."""


@contextmanager
def _tasks_shown_if_slow(seconds: float, doing: str) -> Iterator[None]:
    """Print every task's stack to stderr if the block still runs after `seconds`.

    A hang then says where it is: a test's timeout shows only the threads.
    """

    def show() -> None:
        print(f"{doing} has taken {seconds} s; its tasks:", file=sys.stderr)
        for task in asyncio.all_tasks():
            task.print_stack(file=sys.stderr)

    timer = asyncio.get_running_loop().call_later(seconds, show)
    try:
        yield
    finally:
        timer.cancel()
