"""Build the server from Settings, and own its lifecycle: start, SERVING, SIGTERM, drain, stop."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.models import Model
from pydantic_ai.providers import infer_provider
from pydantic_ai.toolsets import AbstractToolset

from . import convert
from ._gen.woolly.v1 import agent_service_pb2_grpc
from .api import SERVICE_NAME
from .cache import ResultCache
from .config import Settings
from .config import StartupError as StartupError  # where callers have always caught it
from .core import (
    REPOSITORY_TOOLSET,
    AgentRunner,
    ChainRunner,
    Limits,
    Models,
    RepoDeps,
    RetryPolicy,
    Unavailable,
)
from .core.models import ProviderFactory
from .interceptors import KeyFile, build_interceptors
from .interceptors.keys import key_source
from .observability.agents import AgentMetrics
from .observability.collectors import HealthCollector, RunStoreCollector
from .observability.endpoint import MetricsEndpoint
from .observability.logs import quiet_data_loggers, redacted_url
from .observability.metrics import Metrics
from .runs import Refusals, ReplaySlots, RunJournal, RunManager
from .saved_agents import AgentDatabase, SavedAgents, toolset_names
from .service import AgentService
from .status import StatusReporter
from .store import MemoryStore, open_store
from .tracing import Tracing, tracer_provider_from_environment
from .transport import add_reflection, connection_budget, server_credentials, server_options

_log = logging.getLogger(__name__)


@dataclass
class App:
    """A built server and the parts its lifecycle needs."""

    server: aio.Server
    health: health.aio.HealthServicer
    runs: RunManager
    cache: ResultCache
    metrics: Metrics
    port: int
    """The bound port (the real one when settings.port is 0)."""
    settings: Settings
    status: StatusReporter
    agents: SavedAgents
    """Saved agents; their database is opened (schema created) by `start`."""
    models: Models
    """The models runs use; their providers' HTTP clients are opened by `start`."""
    metrics_endpoint: MetricsEndpoint | None = None
    """The /metrics HTTP server, once started (none when `metrics_port` is 0)."""
    key_file: KeyFile | None = None
    """The API key file, when keys come from one; `start` has it followed."""
    key_watch: asyncio.Task[None] | None = None
    """The task following `key_file`, once started."""
    stopping: asyncio.Task[None] | None = None
    """The shutdown, once begun (`stop`)."""
    tracing: Tracing | None = None
    """Its traces, when tracing is on; their last spans are exported at `stop`."""
    connections: int = 0
    """Most client connections it holds at once (`connection_budget`)."""


def build(
    settings: Settings,
    *,
    model: Model | None = None,
    provider_factory: ProviderFactory = infer_provider,
    tracer_provider: TracerProvider | None = None,
) -> App:
    """Wire the agent core, runs, servicer, health and reflection into an unstarted server.

    Args:
        settings: The configuration.
        model: Use this model instead of `settings.model` (tests pass a FunctionModel).
        provider_factory: Builds model providers by name; pydantic-ai's reads the environment
            (`OPENAI_API_KEY`, `OPENAI_BASE_URL`, …), tests point theirs at a loopback server.
        tracer_provider: Turns tracing on: spans go to it (the server shuts it down at `stop`).
            None = no tracing at all.
    """
    quiet_data_loggers()
    tracing = (
        Tracing.over(tracer_provider, include_content=settings.trace_content)
        if tracer_provider is not None
        else None
    )
    tracer = tracing.tracer if tracing is not None else None
    metrics = Metrics()
    limits = Limits(
        max_query_chars=settings.max_query_chars,
        max_context_bytes=settings.max_context_bytes,
        max_chain_steps=settings.max_chain_steps,
        max_model_requests=settings.max_model_requests,
        max_tool_calls=settings.max_tool_calls,
    )
    retries = metrics.agent_model_retries
    try:
        models = Models(
            model or settings.model,
            allowed=settings.models,
            fallbacks=settings.model_fallbacks,
            retry=RetryPolicy(
                retries=settings.model_retries,
                max_wait_s=settings.model_retry_max_wait_s,
                observe=lambda reason: retries.labels(reason).inc(),
            ),
            provider_factory=provider_factory,
        )
    except ValueError as exc:
        raise StartupError(str(exc)) from exc
    runner = AgentRunner(
        model=models,
        repos_root=settings.repos_root,
        toolset=_toolset(settings),
        limits=limits,
        tool_retries=settings.tool_retries,
        instrumentation=tracing.instrumentation if tracing is not None else None,
    )
    try:
        store = open_store(settings.cache_url)
    except ValueError as exc:
        raise StartupError(f"cannot use cache {settings.cache_url!r}: {exc}") from exc
    shared = not isinstance(store, MemoryStore)  # a memory store is already in-process
    cache = ResultCache(
        store,
        model=runner.model_name,
        default_ttl_s=settings.cache_ttl_s,
        max_ttl_s=settings.max_cache_ttl_s,
        metrics=metrics,
        hot=MemoryStore(max_bytes=settings.cache_hot_max_bytes) if shared else None,
        hot_ttl_s=settings.cache_hot_ttl_s,
    )
    journal = RunJournal(
        store if shared else _run_store(settings),
        replica=uuid.uuid4().hex,
        retention_s=settings.run_retention_s,
        lease_s=settings.run_lease_s,
        linger_s=settings.run_log_linger_s,
        recheck_s=settings.run_recheck_s,
        max_pending_bytes=settings.run_outage_buffer_bytes,
    )
    metrics.add_collector(RunStoreCollector(journal))
    refusals = Refusals(lambda limit: metrics.overload_refusals.labels(limit).inc())
    runs = RunManager(
        journal, settings, observer=AgentMetrics(metrics), refusals=refusals, tracer=tracer
    )
    replays = ReplaySlots(settings.max_concurrent_replays, refusals)
    try:
        agents = SavedAgents(
            AgentDatabase(settings.database_url, timeout_s=settings.db_timeout_s),
            toolset_names(runner.toolset),
            models.specs,
        )
    except ValueError as exc:
        raise StartupError(f"cannot use WOOLLY_DATABASE_URL: {exc}") from exc
    metrics.add_collector(HealthCollector(cache, agents.database))

    async def agent_revisions(request: convert.AgentRunRequest, tenant: str) -> bytes:
        return await agents.revision_key(tenant, convert.agent_refs(request))

    keys = key_source(settings)
    connections = connection_budget(settings)
    server = aio.server(
        interceptors=build_interceptors(
            cache if settings.cache_enabled else None,
            metrics=metrics,
            key_extras=agent_revisions,
            api_keys=keys,
            replays=replays,
            tracer=tracer,
        ),
        options=server_options(settings, connections),
    )
    chains = ChainRunner(runner, tracer=tracer)
    status = StatusReporter(
        model=runner.model_name,
        repos_root=settings.repos_root,
        mcp_url=settings.mcp_url,
        builtin_tools=len(REPOSITORY_TOOLSET.tools),
        runs=runs,
        cache=cache,
        metrics=metrics,
        database=agents.database,
        models=models,
    )
    service = AgentService(
        runner,
        chains,
        runs,
        status=status,
        agents=agents,
        cache=cache if settings.cache_enabled else None,
        replays=replays,
    )
    agent_service_pb2_grpc.add_AgentServiceServicer_to_server(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    add_reflection(server)
    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(settings)
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise StartupError(f"cannot listen on {address}: {exc}") from exc
    return App(
        server,
        health_servicer,
        runs,
        cache,
        metrics,
        port,
        settings,
        status=status,
        agents=agents,
        models=models,
        key_file=keys if isinstance(keys, KeyFile) else None,
        tracing=tracing,
        connections=connections,
    )


_KEYS_PER_RUN = 5
"""Record, log, request, owner lease, reader lease (`runs/keys.py`)."""


def _run_store(settings: Settings) -> MemoryStore:
    """With `memory://`, the store of runs: apart from the cache's, bounded by count.

    Cache pressure then never evicts a run before its retention (`WOOLLY_RUN_STORE_MAX_RUNS`).
    """
    return MemoryStore(max_bytes=2**62, max_keys=settings.run_store_max_runs * _KEYS_PER_RUN)


def _toolset(settings: Settings) -> AbstractToolset[RepoDeps]:
    """The tools agents may call: the MCP server's when one is configured, else the built-ins."""
    if settings.mcp_url:
        _log.info("agents use the tools of the MCP server at %s", redacted_url(settings.mcp_url))
        return MCPToolset(settings.mcp_url, id="mcp")
    return REPOSITORY_TOOLSET


async def start(app: App) -> None:
    """Start taking calls and report SERVING."""
    _start_metrics_endpoint(app)  # first: a taken port then leaves nothing else to close
    await _open_agents_database(app)
    await app.models.open()
    await app.runs.open()
    await app.server.start()
    if app.key_file is not None:
        app.key_watch = asyncio.create_task(app.key_file.watch(), name="api-key-file")
    await app.health.set("", health_pb2.HealthCheckResponse.SERVING)
    await app.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    app.status.serving = True


async def _open_agents_database(app: App) -> None:
    """Connect to the saved-agents database and create its schema, or stop start-up."""
    database = app.agents.database
    try:
        await database.open()
    except Unavailable as exc:
        await database.close()
        raise StartupError(str(exc)) from exc
    _log.info("saved agents in %s", database.display_url)


def _start_metrics_endpoint(app: App) -> None:
    port = app.settings.metrics_port
    if port == 0:
        return
    address = f"{app.settings.host}:{port}"
    try:
        app.metrics_endpoint = MetricsEndpoint(app.metrics.registry, app.settings.host, port)
    except OSError as exc:
        raise StartupError(f"cannot serve /metrics on {address}: {exc}") from exc
    _log.info("metrics on http://%s/metrics", address)


async def stop(app: App, grace: float | None = None) -> None:
    """NOT_SERVING at once, let in-flight calls finish within the grace, cancel the rest.

    Once only: called again while it runs (a second signal), it does not start over; with no
    grace it cancels the runs still going (reason SHUTDOWN), so the drain ends now.
    """
    if app.stopping is None:
        app.stopping = asyncio.create_task(_shut_down(app, grace), name="shutdown")
    elif grace == 0:
        app.runs.cancel_all()
    await asyncio.shield(app.stopping)


async def _shut_down(app: App, grace: float | None) -> None:
    grace = app.settings.shutdown_grace_s if grace is None else grace
    await app.health.enter_graceful_shutdown()
    app.status.serving = False
    app.runs.closing = True
    await app.server.stop(grace)
    if app.key_watch is not None:
        app.key_watch.cancel()
        await asyncio.gather(app.key_watch, return_exceptions=True)
    await app.runs.close()
    await app.models.close()
    await app.cache.close()
    if app.runs.journal.store is not app.cache.store:
        await app.runs.journal.store.close()
    await app.agents.database.close()
    if app.metrics_endpoint is not None:
        await app.metrics_endpoint.close()
    if app.tracing is not None:  # last: the runs' spans ended as they were cancelled
        await app.tracing.close()


GC_THRESHOLDS = (50_000, 20, 10)
"""Python's default (700, 10, 10) collects so often under many concurrent runs that the
collector's walks over the live heap cost as much CPU as the runs themselves: with these, 1,000
concurrent agent runs take half the CPU, at the same peak memory (docs/performance.md)."""


def tune_gc() -> None:
    """Keep what start-up allocated out of every collection, and collect young objects less often.

    Process-wide, so only `serve` (a server process of its own) calls it, once it has started.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(
    settings: Settings,
    *,
    model: Model | None = None,
    on_serving: Callable[[App], object] | None = None,
) -> None:
    """Run the server until SIGTERM or SIGINT; a second signal stops it without the grace.

    Args:
        settings: The configuration.
        model: Use this model instead of `settings.model`.
        on_serving: Called once the server takes calls (a worker tells its supervisor).
    """
    app = build(settings, model=model, tracer_provider=tracer_provider_from_environment())
    await start(app)
    tune_gc()
    _log.info(
        "serving %s on %s:%d (model %s, repositories in %s, up to %d connections)",
        SERVICE_NAME,
        settings.host,
        app.port,
        settings.model,
        settings.repos_root,
        app.connections,
    )
    if app.tracing is not None:
        _log.info("tracing on: spans exported over OTLP/gRPC as the OTEL_* variables say")
    loop = asyncio.get_running_loop()
    signals: list[asyncio.Task[None]] = []

    def on_signal() -> None:
        if app.stopping is not None:
            _log.warning("second signal: cancelling what is still running")
            signals.append(loop.create_task(stop(app, grace=0)))
            return
        _log.info("shutting down: draining for up to %ss", settings.shutdown_grace_s)
        signals.append(loop.create_task(stop(app)))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    if on_serving is not None:  # once a signal drains it: a supervisor may send one now
        on_serving(app)
    await app.server.wait_for_termination()
    await asyncio.gather(*signals)
    _log.info("stopped")
