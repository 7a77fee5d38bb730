"""An OpenAI-compatible server for tests: the real Chat Completions wire protocol on loopback.

The service talks to it through pydantic-ai's own OpenAI model and the OpenAI SDK, exactly as
it talks to OpenAI, vLLM or Ollama, so every failure path is exercised over a real socket.

What it answers is set by `!words` in the caller's query (it reads the first user message), so
concurrent tests never step on each other:

- `!chunks=N`: the answer is N text chunks (default 3); `!pace=S` waits S seconds between them.
- `!tool`: the first turn calls `list_files` (arguments split over several chunks), then text.
- `!badargs`: every turn calls `list_files` with arguments that do not validate.
- `!status=C`: answer HTTP C (429, 500, 503, 400, 401, 404, …) with an OpenAI error body;
  `!quota` is a 429 whose code is `insufficient_quota`; `!retry_after=S` adds `Retry-After`.
- `!leaky`: the error's message names a URL, an organisation, an address and a key, as real
  providers' and proxies' messages do; `!html`: the error body is a proxy's HTML page.
- `!times=N`: the failure applies to the first N requests of this `!id=…` only, then it answers.
- `!then_status=C`: requests after a tool result answer HTTP C (a run that fails midway).
- `!malformed`: a stream whose second chunk is not JSON.
- `!drop`: a stream cut (connection closed) after its first text chunk.
- `!slow`: a text chunk every 50 ms for 30 s; the moment the client goes away is recorded.

Models listed in `down` always answer 503. `/v1/responses` does not exist here (404), like on
Chat-Completions-only servers; `GET /v1/models` lists the models asked for so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_WORD = re.compile(r"!([a-z_]+)(?:=([^\s]+))?")
_STATUS_TEXT = {
    400: ("invalid_request_error", "bad_request", "The request is not valid."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: sk-t***key."),
    403: ("invalid_request_error", "forbidden", "You are not allowed to use this model."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


LEAKY_MESSAGE = (
    "Rate limit reached for gpt-test in organization org-Ab12Cd34 on requests per min; see "
    "https://platform.openai.com/account/rate-limits. Upstream 10.1.2.3:8443 "
    "(key sk-proj-Zx9***Q7)."
)
"""An error message as real providers write them: an organisation, a URL, an address, a key."""
PROXY_PAGE = "<html><body>upstream connect error at gateway.internal:443 (10.0.0.5)</body></html>"


@dataclass
class Request:
    """One request the server received."""

    path: str
    model: str
    stream: bool
    body: dict[str, Any]
    words: dict[str, str]
    started: float
    status: int = 200
    ended: float | None = None
    """When the answer was complete (monotonic)."""
    client_left: float | None = None
    """When a streamed answer found the client gone (monotonic)."""


@dataclass
class OpenAIServer:
    """The server's state: what it was asked, and which models are down."""

    url: str = ""
    """`http://127.0.0.1:PORT/v1`, the base URL clients use."""
    requests: list[Request] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    models_status: int = 200
    """What `GET /v1/models` answers (401: a bad key, as OpenAI says it)."""
    left: asyncio.Event = field(default_factory=asyncio.Event)
    """Set whenever a client leaves a stream early."""
    _seen: Counter[str] = field(default_factory=Counter)

    def asked(self, word_id: str) -> list[Request]:
        """The chat requests whose query carried `!id=word_id`."""
        return [r for r in self.requests if r.words.get("id") == word_id]

    def chat_requests(self) -> list[Request]:
        """Every Chat Completions request, in arrival order."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/responses", self._no_responses_api)
        app.router.add_get("/v1/models", self._models)
        return app

    async def _models(self, request: web.Request) -> web.Response:
        if self.models_status != 200:
            kind, code, text = _STATUS_TEXT[self.models_status]
            return _error(self.models_status, text, kind, code)
        names = sorted({r.model for r in self.requests if r.model})
        return web.json_response({"object": "list", "data": [{"id": n} for n in names]})

    async def _no_responses_api(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(
            Request(request.path, body.get("model", ""), False, body, {}, time.monotonic(), 404)
        )
        return _error(404, "Invalid URL (POST /v1/responses)", "invalid_request_error", None)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        words = _words(body)
        record = Request(
            request.path,
            body.get("model", ""),
            bool(body.get("stream")),
            body,
            words,
            time.monotonic(),
        )
        self.requests.append(record)
        self._seen[words.get("id", "")] += 1
        failing = "times" not in words or self._seen[words.get("id", "")] <= int(words["times"])
        if record.model in self.down:
            record.status = 503
            return _error(503, _STATUS_TEXT[503][2], "server_error", None)
        turn = _turn(body)
        if turn.tool_results and "then_status" in words:
            return self._failure(record, {**words, "status": words["then_status"]})
        if failing and ("status" in words or "quota" in words):
            return self._failure(record, words)
        if not record.stream:
            record.ended = time.monotonic()
            return web.json_response(_completion(record.model, turn, words))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            async for chunk in _chunks(record.model, turn, words):
                if chunk is None:  # `!drop`: cut the connection mid-stream
                    assert request.transport is not None
                    request.transport.close()
                    return response
                await response.write(chunk)
            await response.write_eof()
            record.ended = time.monotonic()
        except (ConnectionResetError, asyncio.CancelledError):
            record.client_left = time.monotonic()
            self.left.set()
        return response

    def _failure(self, record: Request, words: dict[str, str]) -> web.Response:
        if "quota" in words:
            record.status = 429
            text = "You exceeded your current quota, please check your plan and billing details."
            response = _error(429, text, "insufficient_quota", "insufficient_quota")
        else:
            record.status = int(words["status"])
            kind, code, text = _STATUS_TEXT.get(record.status, ("server_error", None, "Failed."))
            if "leaky" in words:
                text = LEAKY_MESSAGE
            response = _error(record.status, text, kind, code)
            if "html" in words:
                response = web.Response(
                    status=record.status, text=PROXY_PAGE, content_type="text/html"
                )
        if "retry_after" in words:  # as OpenAI sends it: whole seconds, and milliseconds
            wait_s = float(words["retry_after"])
            response.headers["Retry-After"] = str(math.ceil(wait_s))
            response.headers["retry-after-ms"] = str(round(wait_s * 1000))
        record.ended = time.monotonic()
        return response


@dataclass(frozen=True)
class _Turn:
    """What this request should get: a tool call (first turn of `!tool`) or the answer text."""

    call_tool: bool
    tool_results: int
    bad_arguments: bool = False


def _turn(body: dict[str, Any]) -> _Turn:
    messages = body.get("messages", [])
    results = sum(1 for m in messages if m.get("role") == "tool")
    words = _words(body)
    offered = bool(body.get("tools"))
    if "badargs" in words and offered:
        return _Turn(call_tool=True, tool_results=results, bad_arguments=True)
    return _Turn(call_tool="tool" in words and offered and results == 0, tool_results=results)


def _words(body: dict[str, Any]) -> dict[str, str]:
    for message in body.get("messages", []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        return {name: value or "" for name, value in _WORD.findall(str(content))}
    return {}


def _error(status: int, message: str, kind: str, code: str | None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status)


def _answer_chunks(words: dict[str, str], turn: _Turn) -> list[str]:
    count = int(words.get("chunks", "3"))
    suffix = f" (after {turn.tool_results} tool result)" if turn.tool_results else ""
    return [f"part {i + 1}{suffix}. " for i in range(count)]


def _usage(prompt: int = 12, completion: int = 7) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _completion(model: str, turn: _Turn, words: dict[str, str]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None}
    finish = "stop"
    if turn.call_tool:
        message["tool_calls"] = [_tool_call(turn.bad_arguments)]
        finish = "tool_calls"
    else:
        message["content"] = "".join(_answer_chunks(words, turn))
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": _usage(),
    }


def _tool_call(bad: bool = False) -> dict[str, Any]:
    given = {"directory": {"not": "a path"}} if bad else {"directory": ".", "pattern": "*.py"}
    arguments = json.dumps(given)
    return {
        "id": "call_1",
        "type": "function",
        "function": {"name": "list_files", "arguments": arguments},
    }


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


async def _chunks(model: str, turn: _Turn, words: dict[str, str]) -> AsyncIterator[bytes | None]:
    """The SSE frames of a streamed answer; None means "cut the connection here"."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        frame = {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
        }
        return _sse({**frame, "choices": [choice]})

    yield chunk({"role": "assistant", "content": ""})
    if "malformed" in words:
        yield _sse("{this is not json")
        return
    if turn.call_tool:
        call = _tool_call(turn.bad_arguments)
        arguments = call["function"]["arguments"]
        head = {"index": 0, "id": call["id"], "type": "function"}
        yield chunk({"tool_calls": [{**head, "function": {"name": "list_files", "arguments": ""}}]})
        for piece in (arguments[:5], arguments[5:17], arguments[17:]):  # split mid-token
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        yield chunk({}, "tool_calls")
    else:
        pace = 0.05 if "slow" in words else float(words.get("pace", "0"))
        pieces = _answer_chunks({**words, "chunks": "600"} if "slow" in words else words, turn)
        for i, piece in enumerate(pieces):
            yield chunk({"content": piece})
            if "drop" in words and i == 0:
                yield None
                return
            if pace:
                await asyncio.sleep(pace)
        yield chunk({}, "stop")
    usage = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1, "model": model}
    yield _sse({**usage, "choices": [], "usage": _usage()})
    yield _sse("[DONE]")


@contextlib.asynccontextmanager
async def running_openai_server() -> AsyncIterator[OpenAIServer]:
    """Serve on 127.0.0.1 and a free port until the block ends."""
    server = OpenAIServer()
    runner = web.AppRunner(
        server.app(), handle_signals=False, access_log=None, shutdown_timeout=0.1
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield server
    finally:
        await runner.cleanup()
