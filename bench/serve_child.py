"""The real woolly server (local engine, fixture repositories) as a benchmark's child process.

`python -m bench.serve_child --port 0` prints the bound port on stdout, then serves until killed.
Options:

- `--cache-url redis://…`: the result cache's store;
- `--scripted`: serve `bench.models.scripted_model` (output and timing set by the query), its
  model calls counted in `--calls-file`; `--slow-model-ms N`: a model that waits N ms, then
  streams a short answer;
- `--default-gc`: keep Python's collector settings (`woolly-grpc serve` tunes them);
- `--uvloop`: run on uvloop instead of asyncio's own loop;
- `--profile PATH`: cProfile until SIGTERM, stats written there (see `bench.studies.profile`);
- `--no-grpc-metrics`: no metrics interceptor (bench only, to measure its cost);
- `--access-log`: the per-RPC JSON log line (INFO, on stderr).

Other settings come from `WOOLLY_*` variables as usual (e.g. `WOOLLY_MAX_CONCURRENT_RUNS`), and
tracing from `OTEL_*` ones, as `woolly-grpc serve` reads them.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

from pydantic_ai.models import Model

from bench._common import profile_until_sigterm
from bench.models import scripted_model, slow_model
from woolly_grpc.config import Settings
from woolly_grpc.interceptors import build_interceptors
from woolly_grpc.observability.logs import configure_logging
from woolly_grpc.server import App, build, start, tune_gc
from woolly_grpc.tracing import tracer_provider_from_environment

REPOS_ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "repos"


def _build(settings: Settings, model: Model | None, grpc_metrics: bool) -> App:
    if grpc_metrics:
        return build(settings, model=model, tracer_provider=tracer_provider_from_environment())

    def without_metrics(cache: Any, **options: Any) -> Any:
        return build_interceptors(cache, **{**options, "metrics": None})

    # Bench only: the same server without its metrics interceptor, to measure what it costs.
    with mock.patch("woolly_grpc.server.build_interceptors", without_metrics):
        return build(settings, model=model)


async def _serve(
    port: int,
    cache_url: str,
    model: Model | None,
    *,
    access_log: bool,
    grpc_metrics: bool,
    profile: Path | None,
    tuned_gc: bool,
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
    if tuned_gc:
        tune_gc()  # as `woolly-grpc serve` does
    print(app.port, flush=True)
    if profile is None:
        await app.server.wait_for_termination()
        return
    await profile_until_sigterm(profile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--cache-url", default="memory://", help="the result cache's store")
    parser.add_argument("--slow-model-ms", type=float, help="serve a model that waits this long")
    parser.add_argument("--scripted", action="store_true", help="serve the scripted test model")
    parser.add_argument("--calls-file", type=Path, help="count the scripted model's calls here")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, not asyncio's loop")
    parser.add_argument("--profile", type=Path, help="cProfile until SIGTERM, stats to this file")
    parser.add_argument("--default-gc", action="store_true", help="keep Python's GC thresholds")
    parser.add_argument("--no-grpc-metrics", action="store_true", help="no metrics interceptor")
    parser.add_argument("--access-log", action="store_true", help="log every RPC (JSON, INFO)")
    args = parser.parse_args()
    model: Model | None = None
    if args.scripted:
        model = scripted_model(args.calls_file)
    elif args.slow_model_ms is not None:
        model = slow_model(args.slow_model_ms / 1e3)
    serve = _serve(
        args.port,
        args.cache_url,
        model,
        access_log=args.access_log,
        grpc_metrics=not args.no_grpc_metrics,
        profile=args.profile,
        tuned_gc=not args.default_gc,
    )
    if args.uvloop:
        import uvloop  # only this option needs it

        uvloop.run(serve)
    else:
        asyncio.run(serve)


if __name__ == "__main__":
    main()
