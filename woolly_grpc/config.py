"""Settings: every knob of the server, read once from `WOOLLY_*` variables or `serve` flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class StartupError(Exception):
    """The server cannot start with these settings; the message says why in one line."""


ModelList = Annotated[tuple[str, ...], NoDecode]
"""Model specs given comma-separated (`openai-chat:a,openai-chat:b`), not as JSON."""


class Settings(BaseSettings):
    """The server's configuration; tests construct it directly, nothing reads os.environ."""

    model_config = SettingsConfigDict(
        env_prefix="WOOLLY_",
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    host: str = "0.0.0.0"
    """Address to listen on."""
    port: int = Field(50051, ge=0, le=65535)
    """gRPC port; 0 picks a free one."""
    workers: int = Field(1, ge=1, le=256)
    """Server processes sharing the port (SO_REUSEPORT), each with its own event loop, under a
    supervisor that serves the one `/metrics` of them all. More than 1 needs a shared
    `cache_url` (`redis://`, `redis+cluster://`): runs and cache live there."""
    metrics_port: int = Field(9464, ge=0, le=65535)
    """Port of the Prometheus `/metrics` endpoint (on `host`); 0 turns it off."""
    model: str = "local"
    """`local` (the offline engine) or a pydantic-ai model name: `openai-chat:NAME` for Chat
    Completions servers (OpenAI, vLLM, Ollama, llama.cpp; `OPENAI_BASE_URL` says where),
    `openai:NAME` for OpenAI's Responses API."""
    models: ModelList = ()
    """Further models saved agents may name, comma-separated (the server's model always may)."""
    model_fallbacks: ModelList = ()
    """Models tried in order, comma-separated, when a provider model fails before answering in a
    way that may pass (rate limited, 5xx, unreachable, unreadable) or its quota is exhausted."""
    model_retries: int = Field(2, ge=0, le=10)
    """Retries of a model request that failed in a way that may pass, before its answer began."""
    model_retry_max_wait_s: float = Field(10.0, ge=0)
    """Longest wait before one retry; a provider asking to wait longer (Retry-After) is not
    retried: the caller gets UNAVAILABLE with that delay as RetryInfo."""
    tool_retries: int = Field(2, ge=0, le=10)
    """How often a tool call with bad arguments goes back to the model to be corrected."""
    repos_root: Path = Path()
    """The directory whose subdirectories are the repositories the tools may read."""
    cache_url: str = "memory://"
    """Where cached results and run logs live: `memory://` (this process), `redis://host:port/db`
    or a Redis Cluster, `redis+cluster://host:port,host:port` (`rediss…` with TLS)."""
    cache_enabled: bool = True
    """False turns the result cache off for every call (runs still use `cache_url`)."""
    cache_ttl_s: float = Field(3600.0, gt=0)
    """How long a cached result lives when the call does not say (`options.cache_ttl`)."""
    max_cache_ttl_s: float = Field(7 * 24 * 3600.0, gt=0)
    """Longest `options.cache_ttl` a call may ask for; longer is INVALID_ARGUMENT (so that one
    tenant cannot fill a shared cache with entries that never expire)."""
    cache_hot_ttl_s: float = Field(1.0, ge=0)
    """With a Redis cache: how long this replica keeps a hot copy of the entries it read or
    wrote, so hot keys skip the round trip (a REFRESH elsewhere shows here at most this late);
    0 = off."""
    cache_hot_max_bytes: int = Field(64 * 1024 * 1024, ge=1)
    """Bound on that hot copy; least recently used entries go first."""
    mcp_url: str | None = None
    """An MCP server (streamable HTTP) whose tools replace the built-in repository tools."""
    database_url: str = "sqlite:///woolly.db"
    """Where saved agents live: `sqlite:///PATH` (relative to the working directory; `////` for an
    absolute path) or `postgresql://USER:PASSWORD@HOST:PORT/DB` (for several replicas)."""
    db_timeout_s: float = Field(5.0, gt=0)
    """Longest one saved-agents database operation may take; then the call is UNAVAILABLE."""
    max_query_chars: int = Field(100_000, ge=1)
    """Longest accepted `user_query`, in characters."""
    max_context_bytes: int = Field(256 * 1024, ge=2)
    """Largest accepted `context`, as compact JSON."""
    max_chain_steps: int = Field(10, ge=1)
    """Most agents in one chain."""
    max_concurrent_runs: int = Field(64, ge=1)
    """Most runs executing at once on this replica; more get RESOURCE_EXHAUSTED."""
    tenant_max_concurrent_runs: int | None = Field(None, ge=1)
    """Most runs one tenant may have executing at once on this replica; more get
    RESOURCE_EXHAUSTED. Unset = only `max_concurrent_runs` applies."""
    max_concurrent_replays: int = Field(512, ge=1)
    """Most streams answered from stored events at once (cache-hit StreamExecute and
    ExecuteChain, WatchRun); more get RESOURCE_EXHAUSTED. A client that reads nothing holds its
    stream in memory (up to its HTTP/2 window, ~4 MiB, before writes wait): this bounds that."""
    max_message_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    """Largest accepted gRPC message. The largest valid request is about 0.7 MB (a 100,000
    character query of 4-byte characters and a 256 KiB context); the headroom is for contexts
    whose protobuf form is larger than their JSON (lists of small numbers), so field limits,
    not this one, answer with which field is too large."""
    max_connections: int = Field(0, ge=0)
    """Most client connections held at once; 0 = half of the process's descriptor limit (raised
    to its hard limit at start-up) after a reserve, since each call may open a connection or
    file of its own (a model provider, Redis, a repository file). Past it new connections are
    closed at once."""
    max_streams_per_connection: int = Field(1000, ge=1)
    """Most calls in flight on one connection (HTTP/2 MAX_CONCURRENT_STREAMS); a client past it
    waits for one to end (its own channel queues the call)."""
    handshake_timeout_s: float = Field(10.0, gt=0)
    """A connection that has not finished its TLS and HTTP/2 handshake by then is closed (a
    silent connection holds a descriptor and nothing else closes it)."""
    connection_idle_s: float = Field(300.0, gt=0)
    """A connection with no call in flight for this long is closed (gRPC clients reconnect when
    they next call)."""
    connection_max_age_s: float = Field(0.0, ge=0)
    """Close connections this old (after their calls end, up to `shutdown_grace_s`), so clients
    rebalance across replicas after a scale-out; 0 = never."""
    max_model_requests: int = Field(50, ge=1)
    """Most model requests one agent run may make; more fail the run with RESOURCE_EXHAUSTED."""
    max_tool_calls: int = Field(200, ge=0)
    """Most tool calls one agent run may make; more fail the run with RESOURCE_EXHAUSTED."""
    api_keys: SecretStr | None = None
    """Unset = no authentication. Else comma-separated `tenant:key` entries (a bare `key` is a
    tenant of its own), or the path of a file of them, one per line (a value starting with `/`,
    `./`, `../` or `~/`), followed like `api_keys_file`. An entry `tenant:key:ro` is read-only.
    Callers send `authorization: Bearer <key>`."""
    api_keys_file: Path | None = None
    """A file of API keys, one entry per line (`#` starts a comment), re-read within seconds of
    a change without a restart (Kubernetes updates a mounted secret in place); a change that
    cannot be read or parsed keeps the last good keys."""
    tls_cert: Path | None = None
    """PEM certificate chain of the server; with `tls_key`, the port speaks TLS only."""
    tls_key: Path | None = None
    """PEM private key of `tls_cert`."""
    tls_client_ca: Path | None = None
    """PEM CA bundle: with it, clients must present a certificate it signed (mutual TLS)."""
    orphan_grace_s: float = Field(10.0, ge=0)
    """How long a run whose callers all went away waits for a WatchRun before it is cancelled."""
    run_lease_s: float = Field(10.0, gt=0)
    """A replica renews a lease on each run it executes; a run whose lease lapsed (its replica
    died) is settled FAILED by whichever replica reads it next. Readers on other replicas hold
    leases as long, so the owner does not cancel a run they watch."""
    run_outage_buffer_bytes: int = Field(64 * 1024 * 1024, ge=0)
    """Events a replica keeps while the store is away, to write when it is back; past this, the
    oldest ended runs keep only their final record (readers then get OUT_OF_RANGE)."""
    run_store_max_runs: int = Field(100_000, ge=1)
    """With `memory://`: most runs kept (their own store, apart from the result cache's);
    the least recently used go first."""
    run_retention_s: float = Field(3600.0, gt=0)
    """How long a run (record, request, events) is kept after its last event, in the store and
    at most in this replica's memory."""
    run_memory_max: int = Field(1000, ge=1)
    """Most runs this replica keeps in memory; older finished ones are read from the store."""
    run_memory_min_s: float = Field(60.0, ge=0)
    """A run that ended less than this ago stays in memory whatever `run_memory_max` says (its
    callers are still reading how it ended)."""
    run_log_linger_s: float = Field(0.05, ge=0)
    """How long a run's new events gather before they are written to the store as one batch
    (the first write never waits: other replicas know a run as soon as its caller does)."""
    run_recheck_s: float = Field(1.0, gt=0)
    """A reader on another replica re-reads a run this often without news (a notice may be
    lost); also how soon a lost control channel is listened to again."""
    run_cancel_wait_s: float = Field(10.0, gt=0)
    """How long CancelRun waits for the replica running the run to confirm it stopped, and
    start-up for the control channel between replicas."""
    run_close_flush_s: float = Field(2.0, ge=0)
    """At shutdown, how long the journal may take to write out runs' last events."""
    shutdown_grace_s: float = Field(30.0, ge=0)
    """On SIGTERM, how long in-flight calls may take to finish before they are cancelled."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of the server."""
    log_format: Literal["text", "json"] = "text"
    """`text` lines for people, or `json` (one object per line) for log collectors."""
    trace_content: bool = False
    """With tracing on (`OTEL_EXPORTER_OTLP_ENDPOINT` set), also export prompts, answers and
    tool arguments and results on the model and tool spans; off, spans carry no text of either."""

    @field_validator("repos_root")
    @classmethod
    def _repos_root_is_a_directory(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        return value.resolve()

    @field_validator("cache_url")
    @classmethod
    def _known_cache_scheme(cls, value: str) -> str:
        schemes = ("memory://", "redis://", "rediss://", "redis+cluster://", "rediss+cluster://")
        if not value.startswith(schemes):
            raise ValueError(f"must start with {', '.join(schemes)}")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "sqlite+", "postgresql:", "postgresql+", "postgres:")):
            raise ValueError("must be sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB")
        return value

    @model_validator(mode="after")
    def _tls_files_come_together(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("WOOLLY_TLS_CERT and WOOLLY_TLS_KEY must be given together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("WOOLLY_TLS_CLIENT_CA needs WOOLLY_TLS_CERT and WOOLLY_TLS_KEY")
        return self

    @model_validator(mode="after")
    def _limits_fit_together(self) -> Settings:
        if self.cache_ttl_s > self.max_cache_ttl_s:
            raise ValueError(
                f"WOOLLY_CACHE_TTL_S ({self.cache_ttl_s:g}) is above WOOLLY_MAX_CACHE_TTL_S "
                f"({self.max_cache_ttl_s:g})"
            )
        tenant_max = self.tenant_max_concurrent_runs
        if tenant_max is not None and tenant_max > self.max_concurrent_runs:
            raise ValueError(
                f"WOOLLY_TENANT_MAX_CONCURRENT_RUNS ({tenant_max}) is above "
                f"WOOLLY_MAX_CONCURRENT_RUNS ({self.max_concurrent_runs}), so it would never apply"
            )
        return self

    @model_validator(mode="after")
    def _workers_share_a_store(self) -> Settings:
        if self.workers > 1 and self.cache_url.startswith("memory://"):
            raise ValueError(
                f"WOOLLY_WORKERS={self.workers} needs a shared WOOLLY_CACHE_URL (redis:// or "
                "redis+cluster://): with memory:// each worker would have runs and a cache of "
                "its own"
            )
        return self

    @model_validator(mode="after")
    def _one_source_of_keys(self) -> Settings:
        if self.api_keys is not None and self.api_keys_file is not None:
            raise ValueError("set WOOLLY_API_KEYS or WOOLLY_API_KEYS_FILE, not both")
        return self

    @field_validator("models", "model_fallbacks", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


def describe_error(error: ValidationError) -> str:
    """One line naming each bad setting as its environment variable, e.g. for start-up errors."""
    parts = []
    for item in error.errors():
        field = "_".join(str(p) for p in item["loc"])
        if not field:  # a rule over several settings names them in its message
            parts.append(str(item["msg"]).removeprefix("Value error, "))
            continue
        parts.append(f"WOOLLY_{field.upper()} (--{field.replace('_', '-')}): {item['msg']}")
    return "invalid settings: " + "; ".join(parts)
