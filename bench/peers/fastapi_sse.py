"""The service as first planned (FastAPI + SSE + a Redis result cache), as a benchmark peer.

Issue 10 compares woolly's gRPC serving layer with this design over the same agent core
(`woolly_grpc.core.AgentRunner`) and the same test model (`bench.models.scripted_model`), so what
differs is the serving layer alone. It is built as a good FastAPI service would be, not as a
strawman: async endpoints, a pooled redis.asyncio client (hiredis), cache hits answered with the
stored bytes, uvicorn on uvloop + httptools when installed, no access log, one worker (like one
woolly replica). Like the planned design it has no request coalescing.

`python -m bench.peers.fastapi_sse --port 0 [--cache-url redis://…|memory://] [--calls-file P]`
prints the bound port on stdout, then serves until SIGTERM (the protocol of `bench.serve_child`).

API: `POST /v1/execute` → `{"run_id", "result"}`; `POST /v1/stream` → server-sent events
(`id:` 1-based sequence, `event:` started|text_delta|tool_call|tool_result|completed, `data:`
JSON). Both take `{repository_name, agent_type, user_query, context?, cache_policy?}` and answer
with `x-cache: hit|miss|bypass`. `GET /healthz`. The client helpers at the end serve the driver.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_json
from sse_starlette import EventSourceResponse

from bench.models import scripted_model
from woolly_grpc import core
from woolly_grpc.server import tune_gc

REPOS_ROOT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "repos"
TTL_S = 3600
_JSON = "application/json"
_EVENT_NAMES: dict[type, bytes] = {
    core.Started: b"started",
    core.TextDelta: b"text_delta",
    core.ToolCall: b"tool_call",
    core.ToolResult: b"tool_result",
    core.Completed: b"completed",
}
_STATUS = {
    core.InvalidInput: 400,
    core.OutOfRange: 400,
    core.NotFound: 404,
    core.Overloaded: 503,
    core.Unavailable: 503,
}
_log = logging.getLogger(__name__)


class Body(BaseModel):
    """The request body of both endpoints."""

    model_config = ConfigDict(extra="forbid")

    repository_name: str
    agent_type: core.AgentType
    user_query: str
    context: dict[str, Any] = Field(default_factory=dict)
    cache_policy: Literal["default", "bypass"] = "default"


class _Cache(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes) -> None: ...
    async def close(self) -> None: ...


class _MemoryCache:
    """`memory://`: a dict of (expiry, bytes), for local checks."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, bytes]] = {}

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        return entry[1] if entry is not None and entry[0] > time.monotonic() else None

    async def set(self, key: str, value: bytes) -> None:
        self._entries[key] = (time.monotonic() + TTL_S, value)

    async def close(self) -> None:
        self._entries.clear()


class _RedisCache:
    """`redis://`: a pooled client; a failing Redis is logged and the request served uncached."""

    def __init__(self, url: str) -> None:
        # A blocking pool, as woolly's: past 100 requests in flight redis-py's default pool
        # raises "Too many connections" instead of queueing.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=1024, timeout=1.0, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self._redis = aioredis.Redis.from_pool(pool)
        self._failing = False

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.get(key)
        except (aioredis.RedisError, OSError) as exc:
            self._failed(exc)
            return None
        self._failing = False
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes) -> None:
        try:
            await self._redis.set(key, value, ex=TTL_S)
        except (aioredis.RedisError, OSError) as exc:
            self._failed(exc)
            return
        self._failing = False

    async def close(self) -> None:
        await self._redis.aclose()

    def _failed(self, exc: Exception) -> None:
        if not self._failing:
            _log.warning("redis failed, serving uncached until it recovers: %s", exc)
        self._failing = True


def _key(endpoint: str, body: Body, model: str) -> str:
    request = body.model_dump(mode="json", exclude={"cache_policy"})
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(
        "\0".join((endpoint, canonical, model, core.PROMPT_VERSION)).encode()
    ).hexdigest()


def _frame(event: core.Event, sequence: int) -> bytes:
    # Compact JSON never holds a raw newline, so one `data:` line is a well-formed SSE event.
    name = _EVENT_NAMES[type(event)]
    return b"id: %d\r\nevent: %s\r\ndata: %s\r\n\r\n" % (sequence, name, to_json(event))


def _error(exc: Exception) -> tuple[int, bytes]:
    """An exception as (HTTP status, JSON body); unexpected ones are not described."""
    if not isinstance(exc, core.WoollyError):
        return 500, b'{"error":"Internal","message":"internal error"}'
    status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)
    error: dict[str, Any] = {"error": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, core.InvalidInput):
        error["violations"] = [dataclasses.asdict(v) for v in exc.violations]
    return status, to_json(error)


async def _relay(
    first: core.Event, events: AsyncIterator[core.Event], cache: _Cache, key: str | None
) -> AsyncIterator[bytes]:
    """Send each event as it comes; on completion store the frames (completed says cached)."""
    stored, sequence, event = [_frame(first, 1)], 1, first
    yield stored[0]
    try:
        async for event in events:
            sequence += 1
            yield (frame := _frame(event, sequence))
            if isinstance(event, core.Completed):
                cached = dataclasses.replace(event.result, cached=True)
                frame = _frame(dataclasses.replace(event, result=cached), sequence)
            stored.append(frame)
    except Exception as exc:
        if not isinstance(exc, core.WoollyError):
            _log.error("run failed", exc_info=exc)
        yield b"event: error\r\ndata: %s\r\n\r\n" % _error(exc)[1]
        return
    finally:
        if isinstance(events, AsyncGenerator):
            await events.aclose()  # at once, also when the client went away mid-stream
    if key is not None and isinstance(event, core.Completed):
        await cache.set(key, b"".join(stored))


async def _replay(stored: bytes) -> AsyncIterator[bytes]:
    yield stored  # the whole event stream, framed when it was first sent: one write


def create_app(cache_url: str = "memory://", calls_file: Path | None = None) -> FastAPI:
    """The peer's ASGI app over the scripted model and the fixture repositories."""
    runner = core.AgentRunner(model=scripted_model(calls_file), repos_root=REPOS_ROOT)
    cache: _Cache = _MemoryCache() if cache_url == "memory://" else _RedisCache(cache_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await cache.close()

    app = FastAPI(lifespan=lifespan)

    def lookup_key(endpoint: str, body: Body) -> str | None:
        return None if body.cache_policy == "bypass" else _key(endpoint, body, runner.model_name)

    def run_request(body: Body) -> core.RunRequest:
        return core.RunRequest(body.repository_name, body.agent_type, body.user_query, body.context)

    @app.exception_handler(core.WoollyError)
    @app.exception_handler(Exception)  # Starlette answers these, then re-raises them to be logged
    async def error(request: Request, exc: Exception) -> Response:
        status, content = _error(exc)
        return Response(content, status_code=status, media_type=_JSON)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.post("/v1/execute")
    async def execute(body: Body) -> Response:
        key = lookup_key("execute", body)
        if key is not None and (stored := await cache.get(key)) is not None:
            return Response(stored, media_type=_JSON, headers={"x-cache": "hit"})
        run_id = uuid.uuid4().hex
        result = await _result(runner, run_request(body))
        if key is not None:
            cached = dataclasses.replace(result, cached=True)
            await cache.set(key, to_json({"run_id": run_id, "result": cached}))
        content = to_json({"run_id": run_id, "result": result})
        outcome = "bypass" if key is None else "miss"
        return Response(content, media_type=_JSON, headers={"x-cache": outcome})

    @app.post("/v1/stream")
    async def stream(body: Body) -> EventSourceResponse:
        key = lookup_key("stream", body)
        if key is not None and (stored := await cache.get(key)) is not None:
            return EventSourceResponse(_replay(stored), headers={"x-cache": "hit"})
        events = runner.stream(run_request(body))
        first = await anext(events)  # a bad request fails here, before any byte is sent: 4xx
        outcome = "bypass" if key is None else "miss"
        return EventSourceResponse(_relay(first, events, cache, key), headers={"x-cache": outcome})

    return app


async def _result(runner: core.AgentRunner, request: core.RunRequest) -> core.AgentResult:
    async for event in runner.stream(request):
        if isinstance(event, core.Completed):
            return event.result
    raise core.ModelFailed("the agent ended without a result")


def _fastest(preferred: str, fallback: str) -> str:
    return preferred if importlib.util.find_spec(preferred) is not None else fallback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--cache-url", default="memory://", help="redis://… or memory://")
    parser.add_argument("--calls-file", type=Path, help="count the scripted model's calls here")
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(2048)  # connections made before uvicorn starts wait in the backlog
    config = uvicorn.Config(
        create_app(args.cache_url, args.calls_file),
        loop=_fastest("uvloop", "asyncio"),
        http=_fastest("httptools", "h11"),
        access_log=False,
        log_level="warning",
    )
    print(sock.getsockname()[1], flush=True)
    tune_gc()  # the same collector settings as woolly's server: compare serving layers only
    uvicorn.Server(config).run(sockets=[sock])


# Client helpers for the benchmark driver: raw bytes, no JSON parsing.


def request_body(repository: str, agent_type: str, query: str, *, bypass: bool = False) -> bytes:
    """The JSON body of an execute or stream request."""
    body = {"repository_name": repository, "agent_type": agent_type, "user_query": query}
    if bypass:
        body["cache_policy"] = "bypass"
    return json.dumps(body).encode()


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[bytes, str]:
    headers = {"content-type": _JSON}
    async with session.post(url, data=body, headers=headers) as response:
        content = await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}: {content[:500]!r}")
        return content, response.headers.get("x-cache", "")


async def execute(session: aiohttp.ClientSession, base_url: str, body: bytes) -> tuple[bytes, str]:
    """`POST /v1/execute`: the response body and its x-cache header."""
    return await _post(session, f"{base_url}/v1/execute", body)


async def stream(
    session: aiohttp.ClientSession, base_url: str, body: bytes
) -> tuple[list[bytes], str]:
    """`POST /v1/stream`: each event's `data:` payload in order, and the x-cache header."""
    content, outcome = await _post(session, f"{base_url}/v1/stream", body)
    payloads = []
    for block in content.replace(b"\r\n", b"\n").split(b"\n\n"):
        # Comments (`: ping`), `id:` and `event:` lines are skipped; data lines join with \n.
        data = [line[5:].removeprefix(b" ") for line in block.split(b"\n") if line[:5] == b"data:"]
        if data:
            payloads.append(b"\n".join(data))
    return payloads, outcome


async def iter_stream(
    session: aiohttp.ClientSession, base_url: str, body: bytes
) -> AsyncIterator[bytes]:
    """`POST /v1/stream`, yielding each event's `data:` payload as soon as it has arrived."""
    url = f"{base_url}/v1/stream"
    async with session.post(url, data=body, headers={"content-type": _JSON}) as response:
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}: {(await response.read())[:500]!r}")
        data: list[bytes] = []
        async for raw in response.content:
            line = raw.rstrip(b"\r\n")
            if line[:5] == b"data:":
                data.append(line[5:].removeprefix(b" "))
            elif not line and data:  # a blank line ends the event
                yield b"\n".join(data)
                data = []


if __name__ == "__main__":
    main()
