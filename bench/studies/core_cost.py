"""The agent core's own CPU per short run: in this process, no server, the scripted model.

    python -m bench.studies.core_cost [--runs N] [--at-once C] [--interval-ms M] [--saved]
        [--floor] [--profile] [--top N]
    python -m bench.studies.core_cost --ab /tmp/before [--rounds R]

A short run is what the suite's crowd and core-alone rows run: the summarizer over the fixture
repository `calculator`, a fresh query, the scripted model streaming 11 chunks (here at once).
`--at-once C` runs them C at a time (the crowd's shape) instead of one after another; `--saved`
runs them as a saved agent (own prompt, tool allow-list, temperature). CPU is
`time.process_time()` over the timed runs, after warm-up runs, with the collector settings
`woolly-grpc serve` uses (`tune_gc`). `--profile` adds a cProfile top list (own time; cProfile
slows Python about 2x, so its shares are a guide).

`--floor` runs the same query through pydantic-ai alone (its Agent with the same instructions
and repository tools, the same model, no woolly code): what no change in the core can remove.
`--ab TREE` measures another checkout (e.g. `git worktree add /tmp/before <commit>`), this one
and pydantic-ai alone, each in a child process of its own, alternating for R rounds, and
prints the ratios to the other checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import _common as common

REPOS_ROOT = common.ROOT / "tests" / "fixtures" / "repos"
LAYERS = (
    ("woolly_grpc/", "woolly_grpc"),
    ("bench/", "the scripted model (bench)"),
    ("pydantic_ai/", "pydantic-ai"),
    ("pydantic_graph/", "pydantic-ai"),
    ("anyio/", "anyio (used by pydantic-ai)"),
    ("asyncio/", "asyncio"),
    ("site-packages/", "other libraries (sniffio, opentelemetry, …)"),
    ("/lib/python3", "other stdlib (dataclasses, contextlib, copy, typing, …)"),
    ("~", "C functions (builtins, called from all of the above)"),
)
CHUNKS = 11
WARM_UP = 30


def _pydantic_ai_alone(model: Any) -> Callable[[str], Awaitable[int]]:
    """The same run with pydantic-ai alone: its Agent, the tools and the model, no woolly code.

    Driven the cheapest way pydantic-ai offers for streamed events (`iter` + `node.stream`).
    """
    from pydantic_ai import Agent

    from woolly_grpc.core import AGENT_SPECS, REPOSITORY_TOOLSET, AgentType, RepoDeps

    agent = Agent(
        None,
        deps_type=RepoDeps,
        instructions=AGENT_SPECS[AgentType.SUMMARIZER].instructions,
        toolsets=[REPOSITORY_TOOLSET],
    )
    deps = RepoDeps("calculator", REPOS_ROOT / "calculator")

    async def run(query: str) -> int:
        count = 0
        async with agent.iter(query, deps=deps, model=model) as run:
            async for node in run:
                if Agent.is_model_request_node(node) or Agent.is_call_tools_node(node):
                    async with node.stream(run.ctx) as events:
                        async for _ in events:
                            count += 1
        return count

    return run


async def _measure(
    runs: int,
    at_once: int,
    interval_ms: float,
    saved: bool,
    floor: bool,
    profiler: cProfile.Profile | None,
) -> float:
    """CPU ms per run of `runs` short runs, `at_once` at a time."""
    # Imported here: with --tree, woolly_grpc comes from that tree (sys.path set first).
    from bench.models import directive, scripted_model
    from woolly_grpc.core import AgentRunner, AgentType, RunRequest, SavedAgent
    from woolly_grpc.server import tune_gc

    runner = AgentRunner(model=scripted_model(), repos_root=REPOS_ROOT)
    alone = _pydantic_ai_alone(scripted_model()) if floor else None
    agent = (
        SavedAgent(
            "a1",
            "terse",
            AgentType.SUMMARIZER,
            system_prompt="Be terse.",
            tools=("list_files", "read_file"),
            temperature=0.2,
        )
        if saved
        else None
    )
    script = directive(CHUNKS, interval_ms=interval_ms)

    async def one() -> int:
        query = f"{script} ({uuid.uuid4().hex[:12]})"
        if alone is not None:
            return await alone(query)
        request = RunRequest(
            "calculator",
            AgentType.SUMMARIZER,
            query,
            saved_agent=agent,
        )
        return sum([1 async for _ in runner.stream(request)])

    async def batch(count: int) -> None:
        for start in range(0, count, at_once):
            await asyncio.gather(*(one() for _ in range(min(at_once, count - start))))

    await batch(WARM_UP)
    tune_gc()
    began = time.process_time()
    if profiler is not None:
        profiler.enable()
    await batch(runs)
    if profiler is not None:
        profiler.disable()
    return (time.process_time() - began) / runs * 1e3


def _top(profiler: cProfile.Profile, runs: int, top: int) -> str:
    stats = pstats.Stats(profiler, stream=io.StringIO())
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total_calls = stats.total_calls  # type: ignore[attr-defined]
    rows = sorted(
        ((own, calls, f"{Path(f).parent.name}/{Path(f).name}:{line}({fn})")
         for (f, line, fn), (calls, _, own, _, _) in entries.items()),
        reverse=True,
    )  # fmt: skip
    total = sum(own for own, _, _ in rows)
    by_layer: dict[str, float] = {}
    for (filename, _, _), (_, _, own, _, _) in entries.items():
        layer = next((name for marker, name in LAYERS if marker in filename), "other")
        by_layer[layer] = by_layer.get(layer, 0.0) + own
    lines = [
        f"profiled: {total_calls / runs:,.0f} Python and C function calls and "
        f"{total / runs * 1e3:.2f} ms own time per run, by layer:"
    ]
    lines[1:1] = [
        f"{own / total:6.1%}  {layer}"
        for layer, own in sorted(by_layer.items(), key=lambda item: -item[1])
    ]
    lines.append("top functions by own time:")
    lines += [
        f"{own / total:6.1%}  {calls / runs:7.1f}/run  {name}" for own, calls, name in rows[:top]
    ]
    return "\n".join(lines)


def _child(tree: Path, options: list[str]) -> float:
    """CPU ms per run measured by a child process running `tree`'s woolly_grpc."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.studies.core_cost", "--tree", str(tree), "--json", *options],
        cwd=common.ROOT,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(json.loads(out.splitlines()[-1])["cpu_ms_per_run"])


def ab(before: Path, rounds: int, options: list[str]) -> str:
    """Alternate children: the two trees and pydantic-ai alone; CPU per run, after / before."""
    load = common.load_average()
    children = {
        "before": (before, options),
        "after": (common.ROOT, options),
        "pydantic-ai alone": (common.ROOT, [*options, "--floor"]),
    }
    figures: dict[str, list[float]] = {name: [] for name in children}
    for index in range(rounds):
        for name in list(children)[:: -1 if index % 2 else 1]:
            figures[name].append(_child(*children[name]))
    lines = [f"load average before: {load}; after: {common.load_average()}"]
    lines += [
        f"{name}: " + ", ".join(f"{x:.2f}" for x in xs) + f" ms CPU per run (median "
        f"{statistics.median(xs):.2f}, least {min(xs):.2f})"
        for name, xs in figures.items()
    ]
    medians = {name: statistics.median(xs) for name, xs in figures.items()}
    for name in ("after", "pydantic-ai alone"):
        ratios = [a / b for a, b in zip(figures[name], figures["before"], strict=True)]
        lines.append(
            f"{name} / before, round by round: "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + f"; of the medians {medians[name] / medians['before']:.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--at-once", type=int, default=1)
    parser.add_argument("--interval-ms", type=float, default=0, help="between chunks")
    parser.add_argument("--saved", action="store_true", help="run as a saved agent")
    parser.add_argument(
        "--floor", action="store_true", help="the same runs through pydantic-ai alone"
    )
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--ab", type=Path, help="a checkout of the code before the change")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    options = ["--runs", str(args.runs), "--at-once", str(args.at_once)]
    options += ["--interval-ms", str(args.interval_ms)]
    options += ["--saved"] if args.saved else []
    options += ["--floor"] if args.floor else []
    if args.ab is not None:
        print(ab(args.ab.resolve(), args.rounds, options))
        return
    if args.tree is not None:
        sys.path.insert(0, str(args.tree.resolve()))
    profiler = cProfile.Profile() if args.profile else None
    cpu_ms = asyncio.run(
        _measure(args.runs, args.at_once, args.interval_ms, args.saved, args.floor, profiler)
    )
    if args.json:
        print(json.dumps({"cpu_ms_per_run": cpu_ms}))
        return
    print(f"{args.runs} runs, {args.at_once} at once: {cpu_ms:.2f} ms CPU per run")
    if profiler is not None:
        print(_top(profiler, args.runs, args.top))


if __name__ == "__main__":
    main()
