"""Case 6: cache-hit calls/s with 2 workers against 1 (`bench.studies.workers` measures)."""

from __future__ import annotations

import contextlib

from bench.studies import workers as study

from ._base import Plan, Report, Servers


async def workers(s: Servers, plan: Plan) -> Report:
    """`woolly-grpc serve --workers 1` and `--workers 2` on the suite's Redis, loaded in turn."""
    load = study.Plan(plan.worker_rounds, plan.worker_burst_s)
    async with contextlib.AsyncExitStack() as stack:
        one, two = await study.measure(load, s.redis_url, stack)
        section = f"### 6. Workers\n\n{study.findings(one, two, load)}"
        return section, [study.ratio(one, two)]
    raise AssertionError("unreachable")  # the exit stack does not swallow exceptions
