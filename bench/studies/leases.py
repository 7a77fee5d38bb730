"""How long after a replica dies its runs are settled elsewhere: SIGKILL to the watcher's end.

    python -m bench.studies.leases [--leases 1 10] [--tries 3]

For each lease length: a redis-server, a replica in its own process (`tests.support.slow_server`,
a model streaming forever) and one in this process. A StreamExecute on the first, a WatchRun of
it on the second; then SIGKILL the first, and time until the watcher's stream ends (with the
run FAILED, UNAVAILABLE). The bound the design promises is lease + 5 s (the watcher re-reads
the store every `WOOLLY_RUN_RECHECK_S`, and settles once the lease has lapsed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from time import perf_counter

from grpc import aio

from bench import _common as common
from tests.runs.test_replicas import start_replica_process
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2
from woolly_grpc._gen.woolly.v1.agent_service_pb2_grpc import AgentServiceStub
from woolly_grpc.config import Settings
from woolly_grpc.testing import running_server

REPOS_ROOT = common.ROOT / "tests" / "fixtures" / "repos"


async def settle_s(lease_s: float) -> float:
    """Seconds from the owner's SIGKILL to the end of a watch on the other replica."""
    async with contextlib.AsyncExitStack() as stack:
        url = await common.start_redis(stack)
        owner, port = await start_replica_process(url, "--lease-s", str(lease_s))
        settings = Settings(
            repos_root=REPOS_ROOT, metrics_port=0, cache_url=url, run_lease_s=lease_s
        )
        try:
            async with (
                aio.insecure_channel(f"127.0.0.1:{port}") as channel,
                running_server(settings) as other,
            ):
                request = agent_service_pb2.StreamExecuteRequest(
                    repository_name="calculator",
                    agent_type=agent_pb2.AGENT_TYPE_SUMMARIZER,
                    user_query="settle",
                )
                call = AgentServiceStub(channel).StreamExecute(request, timeout=120)
                first = await call.read()
                assert isinstance(first, agent_service_pb2.StreamExecuteResponse)
                run_id = first.run_id
                watch = other.stub.WatchRun(agent_service_pb2.WatchRunRequest(run_id=run_id))
                await watch.read()
                owner.send_signal(signal.SIGKILL)
                killed = perf_counter()
                last = None
                while (message := await watch.read()) is not aio.EOF:
                    assert isinstance(message, agent_service_pb2.WatchRunResponse)
                    last = message
                took = perf_counter() - killed
                assert last is not None and last.WhichOneof("event") == "failed", last
        finally:
            if owner.returncode is None:
                owner.kill()
            await owner.wait()
    return took


async def study(leases: list[float], tries: int) -> str:
    lines = []
    for lease_s in leases:
        times = [await settle_s(lease_s) for _ in range(tries)]
        lines.append(
            f"lease {lease_s:g} s: watcher ended {min(times):.2f} to {max(times):.2f} s after the "
            f"SIGKILL ({tries} tries; bound {lease_s + 5:g} s)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leases", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--tries", type=int, default=3)
    args = parser.parse_args()
    print(asyncio.run(study(args.leases, args.tries)))


if __name__ == "__main__":
    main()
