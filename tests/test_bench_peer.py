"""The FastAPI + SSE peer that `bench.suite` compares woolly with caches and replays correctly.

A benchmark against a peer that answered wrongly (or never hit its cache) would prove nothing,
so the peer is started as the suite starts it and called through the suite's own client.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bench._common import Child, spawn, stop
from bench.models import calls_in, directive
from bench.peers.fastapi_sse import execute, iter_stream, request_body, stream


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    children: list[Child] = []
    calls = tmp_path / "calls"
    try:
        port = await spawn("bench.peers.fastapi_sse", children, "--calls-file", str(calls))
        yield f"http://127.0.0.1:{port}", calls
    finally:
        for child in children:
            await stop(child)


async def test_the_peer_answers_repeats_from_its_cache(peer: tuple[str, Path]) -> None:
    url, calls = peer
    body = request_body("calculator", "summarizer", directive(3))
    async with aiohttp.ClientSession() as session:
        first, outcome = await execute(session, url, body)
        assert outcome == "miss"
        again, outcome = await execute(session, url, body)
        assert outcome == "hit"
        produced, replayed = json.loads(first), json.loads(again)
        assert replayed["run_id"] == produced["run_id"] and replayed["result"]["cached"]
        assert replayed["result"]["content"] == produced["result"]["content"] != ""

        events, outcome = await stream(session, url, body)
        assert outcome == "miss" and len(events) == 5  # started, 3 chunks, completed
        replay, outcome = await stream(session, url, body)
        assert outcome == "hit" and replay[:-1] == events[:-1]
        assert json.loads(replay[-1])["result"]["cached"] is True
        assert [event async for event in iter_stream(session, url, body)] == replay

    assert calls_in(calls) == 2, "one model call per endpoint; every repeat was a hit"


async def test_the_peer_rejects_bad_input_with_a_client_error(peer: tuple[str, Path]) -> None:
    url, _ = peer
    async with aiohttp.ClientSession() as session:
        with pytest.raises(RuntimeError, match="HTTP 404"):
            await execute(session, url, request_body("no-such-repository", "summarizer", "hi"))
        with pytest.raises(RuntimeError, match="HTTP 422"):
            await execute(session, url, b'{"repository_name": "calculator"}')
