"""The real woolly server (local engine, fixture repositories) as a benchmark's child process.

`python -m bench.serve_child --port 0` prints the bound port on stdout, then serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from woolly_grpc.config import Settings
from woolly_grpc.server import build, start

REPOS_ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "repos"


async def _serve(port: int) -> None:
    settings = Settings(
        repos_root=REPOS_ROOT, host="127.0.0.1", port=port, model="local", log_level="WARNING"
    )
    app = build(settings)
    await start(app)
    print(app.port, flush=True)
    await app.server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    asyncio.run(_serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
