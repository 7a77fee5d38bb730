"""A real server in its own process whose model streams slowly: `python -m tests.slow_server`.

It prints its port on stdout; the model yields one chunk every `--chunk-s` seconds, forever
(until the run is cancelled), so another process can watch and cancel a run in flight.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel

from woolly_grpc.config import Settings
from woolly_grpc.server import build, start, stop

REPOS_ROOT = Path(__file__).parent / "fixtures" / "repos"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache-url", required=True)
    parser.add_argument("--chunk-s", type=float, default=0.05)
    args = parser.parse_args()

    async def endless(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        chunk = 0
        while True:
            yield f"chunk {chunk}. "
            chunk += 1
            await asyncio.sleep(args.chunk_s)

    settings = Settings(
        repos_root=REPOS_ROOT, host="127.0.0.1", port=0, cache_url=args.cache_url, orphan_grace_s=30
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
