"""The real woolly server (local engine, fixture repositories) as a benchmark's child process.

`python -m bench.serve_child --port 0` prints the bound port on stdout, then serves until killed.
`--cache-url redis://…` picks the result cache's store; `--slow-model-ms N` serves a pydantic-ai
FunctionModel that waits N ms, then streams a short answer (a stand-in for a remote model).
`--no-grpc-metrics` builds the server without the metrics interceptor (bench only, to measure
its cost); `--access-log` turns on the per-RPC JSON log line (INFO, on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest import mock

from pydantic_ai.messages import ModelMessage
from pydantic_ai.models import Model
from pydantic_ai.models.function import AgentInfo, FunctionModel

from woolly_grpc.config import Settings
from woolly_grpc.interceptors import build_interceptors
from woolly_grpc.observability import configure_logging
from woolly_grpc.server import App, build, start

REPOS_ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "repos"


def slow_model(delay_s: float) -> FunctionModel:
    """A model that thinks for `delay_s`, then streams a short answer."""

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        await asyncio.sleep(delay_s)
        yield "A small calculator: "
        yield "add, subtract, multiply, divide."

    return FunctionModel(stream_function=stream)


def _build(settings: Settings, model: Model | None, grpc_metrics: bool) -> App:
    if grpc_metrics:
        return build(settings, model=model)

    def without_metrics(cache: Any, **options: Any) -> Any:
        return build_interceptors(cache, **{**options, "metrics": None})

    # Bench only: the same server without its metrics interceptor, to measure what it costs.
    with mock.patch("woolly_grpc.server.build_interceptors", without_metrics):
        return build(settings, model=model)


async def _serve(
    port: int, cache_url: str, model: Model | None, *, access_log: bool, grpc_metrics: bool
) -> None:
    settings = Settings(
        repos_root=REPOS_ROOT,
        host="127.0.0.1",
        port=port,
        metrics_port=0,
        model="local",
        cache_url=cache_url,
        log_level="INFO" if access_log else "WARNING",
        log_format="json",
        # Saved agents are not benchmarked: keep their database out of the working tree.
        database_url=f"sqlite:///{tempfile.mkdtemp(prefix='woolly-bench-')}/agents.db",
    )
    if access_log:
        configure_logging(settings)
    app = _build(settings, model, grpc_metrics)
    await start(app)
    print(app.port, flush=True)
    await app.server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--cache-url", default="memory://", help="the result cache's store")
    parser.add_argument("--slow-model-ms", type=float, help="serve a model that waits this long")
    parser.add_argument("--no-grpc-metrics", action="store_true", help="no metrics interceptor")
    parser.add_argument("--access-log", action="store_true", help="log every RPC (JSON, INFO)")
    args = parser.parse_args()
    model = None if args.slow_model_ms is None else slow_model(args.slow_model_ms / 1e3)
    serve = _serve(
        args.port,
        args.cache_url,
        model,
        access_log=args.access_log,
        grpc_metrics=not args.no_grpc_metrics,
    )
    asyncio.run(serve)


if __name__ == "__main__":
    main()
