"""Soak: tens of thousands of mixed calls from 64 callers against one server process.

Cache hits and misses, streams, chains, cancelled streams, bad requests, GetRun / WatchRun and
probes, in a fixed random mix, against `bench.serve_child` (the real server in a child process).
Every call kind has its expected status codes; anything else is a failure. The server's resident
memory and open file descriptors are read from /proc at the start, after the warm-up, every 10 %
of the calls and at the end.

    python -m bench.studies.soak [--calls 50000] [--callers 64] [--max-seconds 180] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import _common as common
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2
from woolly_grpc._gen.woolly.v1.agent_service_pb2_grpc import AgentServiceStub
from woolly_grpc.api import method_path

pb = agent_service_pb2
Code = grpc.StatusCode
DOC = common.ROOT / "docs" / "reliability.md"
STORE_MB = 1.0
"""The memory store's bound (the server's default is 256 MiB). Runs are kept in it for an hour,
so RSS grows until the store is full, by design; a small bound fills during the warm-up, and
growth after it then shows leaks, not retention."""
TIMEOUT = 30.0
MODEL_MS = 20.0
"""The served model: a FunctionModel that answers after this long, so that runs are in flight for
a while (cancels and watchers meet live runs) without costing CPU (`--local-engine` does real
work per run, and reaches about a third of the calls/s here)."""
SUMMARIZER, CHAT = agent_pb2.AGENT_TYPE_SUMMARIZER, agent_pb2.AGENT_TYPE_CHAT_ASSISTANT
BYPASS, REFRESH = agent_pb2.CACHE_POLICY_BYPASS, agent_pb2.CACHE_POLICY_REFRESH
HOT = [
    pb.ExecuteRequest(repository_name=repo, agent_type=kind, user_query=f"question {i}")
    for i in range(10)
    for repo in ("calculator", "empty_repo")
    for kind in (SUMMARIZER, CHAT)
]
"""Requests asked again and again: after their first call, cache hits."""
QUERIES = 200
"""Misses cycle through this many queries (REFRESH: they run every time, under bounded keys)."""
SHED = {Code.OK, Code.RESOURCE_EXHAUSTED}
"""A call that starts a run may be refused when the server runs its maximum of runs at once."""


def _bad_requests() -> list[tuple[str, Any, Code]]:
    """Bad calls as (method, request or raw bytes, the code they must get)."""
    nan = pb.ExecuteRequest(repository_name="empty_repo", agent_type=SUMMARIZER, user_query="q")
    nan.context.update({"x": float("nan")})
    negative_ttl = pb.ExecuteRequest(
        repository_name="empty_repo", agent_type=SUMMARIZER, user_query="q"
    )
    negative_ttl.options.cache_ttl.seconds = -1
    invalid, missing = Code.INVALID_ARGUMENT, Code.NOT_FOUND
    return [
        ("Execute", pb.ExecuteRequest(repository_name="calculator", user_query="q"), invalid),
        (
            "Execute",
            pb.ExecuteRequest(repository_name="../etc", agent_type=CHAT, user_query="q"),
            invalid,
        ),
        (
            "Execute",
            pb.ExecuteRequest(repository_name="nope", agent_type=CHAT, user_query="q"),
            missing,
        ),
        ("Execute", pb.ExecuteRequest(repository_name="calculator", agent_type=CHAT), invalid),
        ("Execute", nan, invalid),
        ("Execute", negative_ttl, invalid),
        ("Execute", b"\xff\xfe garbage", invalid),
        (
            "ExecuteChain",
            pb.ExecuteChainRequest(repository_name="calculator", user_query="q"),
            invalid,
        ),
        ("WatchRun", pb.WatchRunRequest(run_id="no-such-run"), missing),
        ("GetRun", pb.GetRunRequest(run_id="no-such-run"), missing),
        ("GetAgent", pb.GetAgentRequest(id="no-such-agent"), missing),
    ]


@dataclass
class Soak:
    """The calls, what they got, and the run ids they saw."""

    channel: aio.Channel
    stub: AgentServiceStub
    rng: random.Random
    recent_runs: deque[str] = field(default_factory=lambda: deque(maxlen=256))
    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    failures: list[str] = field(default_factory=list)
    bad: list[tuple[str, Any, Code]] = field(default_factory=_bad_requests)

    async def hit(self) -> None:
        await self.stub.Execute(self.rng.choice(HOT), timeout=TIMEOUT)

    async def miss(self) -> None:
        request = pb.ExecuteRequest(
            repository_name="empty_repo",
            agent_type=self.rng.choice([SUMMARIZER, CHAT]),
            user_query=f"miss {self.rng.randrange(QUERIES)}",
            options=agent_pb2.RunOptions(cache_policy=REFRESH),
        )
        self.recent_runs.append((await self.stub.Execute(request, timeout=TIMEOUT)).run_id)

    async def stream_hit(self) -> None:
        raw = self.rng.choice(HOT).SerializeToString()  # the same fields and numbers
        request = pb.StreamExecuteRequest.FromString(raw)
        async for _ in self.stub.StreamExecute(request, timeout=TIMEOUT):
            pass

    async def stream_miss(self) -> None:
        request = pb.StreamExecuteRequest(
            repository_name="calculator",
            agent_type=self.rng.choice([SUMMARIZER, CHAT]),
            user_query=f"stream {self.rng.randrange(QUERIES)}",
            options=agent_pb2.RunOptions(cache_policy=BYPASS),
        )
        async for message in self.stub.StreamExecute(request, timeout=TIMEOUT):
            if message.sequence == 1:
                self.recent_runs.append(message.run_id)

    async def chain(self) -> None:
        request = pb.ExecuteChainRequest(
            repository_name="empty_repo",
            agent_chain=[SUMMARIZER, CHAT],
            user_query=f"chain {self.rng.randrange(QUERIES)}",
            mode=self.rng.choice([agent_pb2.CHAIN_MODE_SEQUENTIAL, agent_pb2.CHAIN_MODE_PARALLEL]),
            options=agent_pb2.RunOptions(
                cache_policy=self.rng.choice([agent_pb2.CACHE_POLICY_UNSPECIFIED, REFRESH])
            ),
        )
        async for _ in self.stub.ExecuteChain(request, timeout=TIMEOUT):
            pass

    async def cancel(self) -> None:
        """Leave a stream after its first event, then CancelRun its run (ended or not: OK)."""
        request = pb.StreamExecuteRequest(
            repository_name="calculator",
            agent_type=CHAT,
            user_query=f"cancel {self.rng.randrange(QUERIES)}",
            options=agent_pb2.RunOptions(cache_policy=BYPASS),
        )
        call = self.stub.StreamExecute(request, timeout=TIMEOUT)
        first: Any = await call.read()
        call.cancel()
        if first is aio.EOF:
            raise RuntimeError("the stream ended without an event")
        await self.stub.CancelRun(pb.CancelRunRequest(run_id=first.run_id), timeout=TIMEOUT)

    async def bad_input(self) -> None:
        """A bad request; its own code is re-raised, any other outcome is a failure."""
        method, request, code = self.rng.choice(self.bad)
        try:
            if isinstance(request, bytes):
                raw: Any = self.channel.unary_unary(method_path(method))
                await raw(request, timeout=TIMEOUT)
            elif method in ("WatchRun", "ExecuteChain"):
                async for _ in getattr(self.stub, method)(request, timeout=TIMEOUT):
                    pass
            else:
                await getattr(self.stub, method)(request, timeout=TIMEOUT)
        except aio.AioRpcError as error:
            if error.code() == code:
                raise
            raise AssertionError(f"{method}: {error.code().name} instead of {code.name}") from error
        raise AssertionError(f"{method} accepted a bad request")

    async def get_run(self) -> None:
        run_id = self._recent_run()
        await self.stub.GetRun(pb.GetRunRequest(run_id=run_id), timeout=TIMEOUT)

    async def watch_run(self) -> None:
        request = pb.WatchRunRequest(run_id=self._recent_run(), after_sequence=0)
        async for _ in self.stub.WatchRun(request, timeout=TIMEOUT):
            pass

    async def probe(self) -> None:
        if self.rng.random() < 0.5:
            await self.stub.GetServerStatus(pb.GetServerStatusRequest(), timeout=TIMEOUT)
        else:
            health: Any = health_pb2_grpc.HealthStub(self.channel)
            await health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)

    def _recent_run(self) -> str:
        return self.rng.choice(self.recent_runs)

    async def one(self, kind: str, call: Callable[[], Awaitable[None]]) -> None:
        """Make one call of `kind`; count its code, and a failure if it is not expected."""
        try:
            await call()
            code, details = Code.OK, ""
        except aio.AioRpcError as error:
            code, details = error.code(), error.details() or ""
        except Exception as error:  # a client-side surprise is a failure too
            self.outcomes[kind]["failed"] += 1
            self.failures.append(f"{kind}: {error!r}")
            return
        self.outcomes[kind][code.name] += 1
        if code not in EXPECTED[kind]:
            self.failures.append(f"{kind}: {code.name} {details!r}")


EXPECTED: dict[str, set[Code]] = {
    "hit": {Code.OK},
    "miss": SHED,
    "stream hit": {Code.OK},
    "stream miss": SHED,
    "chain": SHED,
    "cancel": SHED,
    "bad input": {Code.INVALID_ARGUMENT, Code.NOT_FOUND},
    "get run": {Code.OK},
    "watch run": {Code.OK},
    "probe": {Code.OK},
}
"""What each kind may end with (a bad input: exactly the code listed for its request)."""
MIX = {
    "hit": 30,
    "miss": 8,
    "stream hit": 10,
    "stream miss": 4,
    "chain": 3,
    "cancel": 4,
    "bad input": 15,
    "get run": 12,
    "watch run": 10,
    "probe": 4,
}
"""Relative weights of the kinds."""


@dataclass(frozen=True)
class Sample:
    """The server process at one moment."""

    calls: int
    rss_kib: int
    fds: int


def sample(pid: int, calls: int) -> Sample:
    """RSS and open file descriptors of process `pid`, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return Sample(calls, rss, len(list(Path(f"/proc/{pid}/fd").iterdir())))


@dataclass
class Plan:
    calls: int
    callers: int
    warm_up: int
    max_seconds: float
    seed: int
    model_ms: float | None  # None: the local engine
    store_mb: float


async def drive(soak: Soak, plan: Plan, pid: int) -> tuple[list[Sample], float, int]:
    """Run the calls with `plan.callers` tasks; RSS samples at start, warm-up, each 10%, end."""
    kinds = list(MIX)
    calls = {kind: getattr(soak, kind.replace(" ", "_")) for kind in kinds}
    weights = [MIX[kind] for kind in kinds]
    marks = sorted({plan.warm_up, *(plan.calls * i // 10 for i in range(1, 10))})
    samples = [sample(pid, 0)]
    issued = done = 0
    start = perf_counter()
    deadline = start + plan.max_seconds

    async def caller() -> None:
        nonlocal issued, done
        while issued < plan.calls and perf_counter() < deadline:
            issued += 1
            kind = soak.rng.choices(kinds, weights)[0]
            await soak.one(kind, calls[kind])
            done += 1
            if marks and done >= marks[0]:
                marks.pop(0)
                samples.append(sample(pid, done))

    await asyncio.gather(*(caller() for _ in range(plan.callers)))
    elapsed = perf_counter() - start
    samples.append(sample(pid, done))
    return samples, elapsed, done


def _report(
    soak: Soak, plan: Plan, samples: list[Sample], elapsed: float, done: int, loads: tuple[str, str]
) -> str:
    start, end = samples[0], samples[-1]
    warm = next(s for s in samples if s.calls >= min(plan.warm_up, done))
    growth = 100 * (end.rss_kib - warm.rss_kib) / warm.rss_kib
    fails = len(soak.failures)
    kinds = "\n".join(
        f"| {kind} | {sum(soak.outcomes[kind].values()):,} | "
        f"{', '.join(sorted(c.name for c in EXPECTED[kind]))} | "
        f"{', '.join(f'{c} {n:,}' for c, n in soak.outcomes[kind].most_common())} |"
        for kind in MIX
    )
    trend = " → ".join(f"{s.rss_kib / 1024:.0f}" for s in samples)
    fds = " → ".join(str(s.fds) for s in samples)
    stopped = (
        ""
        if done >= plan.calls
        else f" Stopped at the {plan.max_seconds:.0f} s bound after {done:,} of {plan.calls:,}."
    )
    failures = "".join(f"\n- `{f}`" for f in soak.failures[:10])
    model = (
        "the local engine"
        if plan.model_ms is None
        else f"a pydantic-ai FunctionModel answering after {plan.model_ms:g} ms"
    )
    return f"""{common.heading("Soak")}

Command: `{common.command("bench.studies.soak")}`

{common.machine(loads[0])} Load average after the run {loads[1]}. {done:,} calls from \
{plan.callers} concurrent callers (one channel) in {elapsed:.1f} s, {done / elapsed:,.0f} \
calls/s; the first {plan.warm_up:,} are the warm-up.{stopped} Server: `bench.serve_child`, \
{model}, memory store bounded at {plan.store_mb:g} MiB (`memory://?max_bytes=…`); mix seed \
{plan.seed}.

| server process | start | after warm-up | end | growth after warm-up |
|---|---:|---:|---:|---:|
| RSS (MiB) | {start.rss_kib / 1024:.1f} | {warm.rss_kib / 1024:.1f} | {end.rss_kib / 1024:.1f} | \
{growth:+.1f} % (target ≤ 10 %) {"✅" if growth <= 10 else "❌"} |
| open file descriptors | {start.fds} | {warm.fds} | {end.fds} | {end.fds - warm.fds:+d} |

At start, then every 10 % of the calls (and after the warm-up): RSS (MiB) {trend}; open file \
descriptors {fds}.

| call kind | calls | expected codes | got |
|---|---:|---|---|
{kinds}

Unexpected outcomes: **{fails}** (target 0) {"✅" if not fails else "❌"}{failures}
"""


INTRO = """# Reliability

Two checks that the server keeps answering correctly however it is called, and for long.

- **Fuzzing** (`tests/test_fuzz.py`, part of `make test`): Hypothesis sends about 3,000
  random and malformed requests through real gRPC to one real server: random field values in
  the requests that start, read and watch runs and create, update and list saved agents, and
  random or mutated bytes as the raw payload of every method. No answer may be INTERNAL or
  UNKNOWN, every error carries a message, INVALID_ARGUMENT names its fields in a BadRequest,
  and the server is healthy afterwards. `FUZZ_EXAMPLES=10 pytest tests/test_fuzz.py` runs ten
  times as many cases.
- **Soak** (`bench/soak.py`, by hand): 50,000 mixed calls from 64 concurrent callers against
  the server in a child process — cache hits and misses, streams, chains, streams left after
  their first event and cancelled, bad requests, GetRun / WatchRun of recent runs, probes. Each
  call kind has its expected codes (a call that starts a run may also be shed with
  RESOURCE_EXHAUSTED at `max_concurrent_runs`); anything else counts as a failure. It reads the
  server's RSS (VmRSS) and open file descriptors from `/proc` at the start, after the warm-up
  and at the end; growth after the warm-up should stay within 10 %. Rerun it with
  `python -m bench.studies.soak` (`--calls`, `--callers`, `--max-seconds` bound it; `--write`
  appends the report below).

The soak's server keeps its results and runs in a memory store bounded at 1 MiB. Runs stay in
the store for an hour, so RSS grows until the store is full; that is by design (the
production bound is `memory://?max_bytes=…`, 256 MiB by default). With the small bound the
store fills during the warm-up, and growth after it shows leaks rather than retention. With
an 8 MiB bound, RSS was still rising as the store filled (+14 % after a 5,000-call warm-up).
The model is a FunctionModel that answers after 20 ms: runs stay in flight long enough for
cancels and watchers to meet live runs, at no CPU cost. `--local-engine` serves the offline
engine instead, which does real work in every run and reaches about 180 calls/s on this
machine, against 400 to 530 with the FunctionModel.
"""


async def run(plan: Plan) -> str:
    """Start the server, connect, soak, return the report; stop the server."""
    load = common.load_average()
    children: list[common.Child] = []
    try:
        url = f"memory://?max_bytes={int(plan.store_mb * 2**20)}"
        model = () if plan.model_ms is None else ("--slow-model-ms", str(plan.model_ms))
        port = await common.spawn("bench.serve_child", children, "--cache-url", url, *model)
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            soak = Soak(channel, AgentServiceStub(channel), random.Random(plan.seed))
            await soak.miss()  # a first run for GetRun / WatchRun to find
            samples, elapsed, done = await drive(soak, plan, children[0].pid)
        return _report(soak, plan, samples, elapsed, done, (load, common.load_average()))
    finally:
        await asyncio.gather(*(common.stop(p) for p in children))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000, help="how many calls in all")
    parser.add_argument("--callers", type=int, default=64, help="concurrent callers")
    parser.add_argument("--warm-up", type=int, help="calls before the reference sample (10 %%)")
    parser.add_argument("--max-seconds", type=float, default=180, help="stop issuing after this")
    parser.add_argument("--seed", type=int, default=1, help="the mix's random seed")
    parser.add_argument(
        "--model-ms", type=float, default=MODEL_MS, help="the served model answers after this long"
    )
    parser.add_argument("--store-mb", type=float, default=STORE_MB, help="the memory store's bound")
    parser.add_argument(
        "--local-engine", action="store_true", help="serve the local engine instead (slower)"
    )
    parser.add_argument("--write", action="store_true", help="append to docs/reliability.md")
    args = parser.parse_args()
    warm_up = args.warm_up if args.warm_up is not None else args.calls // 10
    model_ms = None if args.local_engine else args.model_ms
    plan = Plan(
        args.calls, args.callers, warm_up, args.max_seconds, args.seed, model_ms, args.store_mb
    )
    report = asyncio.run(run(plan))
    print(report)
    if args.write:
        DOC.parent.mkdir(exist_ok=True)
        if not DOC.exists():
            DOC.write_text(INTRO)
        with DOC.open("a") as doc:
            doc.write("\n" + report)
        print(f"appended to {DOC.relative_to(common.ROOT)}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
