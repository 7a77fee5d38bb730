"""A server in its own process, its model streaming slowly: `python -m tests.support.slow_server`.

It prints its port on stdout; the model yields one chunk every `--chunk-s` seconds, forever
(until the run is cancelled) or `--chunks` of them, so another process can watch and cancel a
run in flight. With `--port` it runs the real lifecycle (`server.serve`: SIGTERM drains within
`--grace-s`) on that port instead, and prints nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from woolly_grpc.config import Settings
from woolly_grpc.server import build, serve, start, stop

REPOS_ROOT = Path(__file__).parents[1] / "fixtures" / "repos"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache-url", required=True)
    parser.add_argument("--chunk-s", type=float, default=0.05)
    parser.add_argument("--chunks", type=int, default=0, help="0: endless")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--grace-s", type=float, default=30.0)
    parser.add_argument("--lease-s", type=float, default=10.0)
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    args = parser.parse_args()
    if args.database_url is None:  # keep test databases out of the working tree
        args.database_url = f"sqlite:///{tempfile.mkdtemp(prefix='woolly-slow-')}/agents.db"

    async def endless(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        chunk = 0
        while not args.chunks or chunk < args.chunks:
            yield f"chunk {chunk}. "
            chunk += 1
            await asyncio.sleep(args.chunk_s)

    if args.port is not None:
        lifecycle = Settings(
            repos_root=REPOS_ROOT,
            host="127.0.0.1",
            port=args.port,
            metrics_port=0,
            cache_url=args.cache_url,
            database_url=args.database_url,
            shutdown_grace_s=args.grace_s,
        )
        await serve(lifecycle, model=FunctionModel(stream_function=endless))
        return

    settings = Settings(
        repos_root=REPOS_ROOT,
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        cache_url=args.cache_url,
        database_url=args.database_url,
        orphan_grace_s=30,
        run_lease_s=args.lease_s,
    )
    app = build(settings, model=FunctionModel(stream_function=endless))
    await start(app)
    print(app.port, flush=True)
    try:
        await app.server.wait_for_termination()
    finally:
        await stop(app, grace=0)


if __name__ == "__main__":
    asyncio.run(main())
