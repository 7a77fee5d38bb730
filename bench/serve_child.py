"""The real woolly server (local engine, fixture repositories) as a benchmark's child process.

`python -m bench.serve_child --port 0` prints the bound port on stdout, then serves until killed.
`--cache-url redis://…` picks the result cache's store; `--slow-model-ms N` serves a pydantic-ai
FunctionModel that waits N ms, then streams a short answer (a stand-in for a remote model).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from pydantic_ai.messages import ModelMessage
from pydantic_ai.models import Model
from pydantic_ai.models.function import AgentInfo, FunctionModel

from woolly_grpc.config import Settings
from woolly_grpc.server import build, start

REPOS_ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "repos"


def slow_model(delay_s: float) -> FunctionModel:
    """A model that thinks for `delay_s`, then streams a short answer."""

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        await asyncio.sleep(delay_s)
        yield "A small calculator: "
        yield "add, subtract, multiply, divide."

    return FunctionModel(stream_function=stream)


async def _serve(port: int, cache_url: str, model: Model | None) -> None:
    settings = Settings(
        repos_root=REPOS_ROOT,
        host="127.0.0.1",
        port=port,
        model="local",
        cache_url=cache_url,
        log_level="WARNING",
    )
    app = build(settings, model=model)
    await start(app)
    print(app.port, flush=True)
    await app.server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--cache-url", default="memory://", help="the result cache's store")
    parser.add_argument("--slow-model-ms", type=float, help="serve a model that waits this long")
    args = parser.parse_args()
    model = None if args.slow_model_ms is None else slow_model(args.slow_model_ms / 1e3)
    asyncio.run(_serve(args.port, args.cache_url, model))


if __name__ == "__main__":
    main()
