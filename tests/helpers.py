"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc import aio
from grpc_health.v1 import health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families

from woolly_grpc.api import AGENT_TYPE_LABELS, agent_type_value

ALL_TYPES = list(AGENT_TYPE_LABELS)


async def assert_eventually(
    check: Callable[[], Awaitable[bool] | bool], *, timeout: float = 10.0, every: float = 0.01
) -> None:
    """Wait until `check()` is true; fail after `timeout` seconds (a bound, not a sync sleep)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(every)


def violations(error: aio.AioRpcError) -> dict[str, str]:
    """The BadRequest field violations of an error, as {field: description}."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no status details in {error!r}"
    found: dict[str, str] = {}
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            found.update({v.field: v.description for v in bad_request.field_violations})
    return found


def code_of(error: BaseException) -> grpc.StatusCode:
    assert isinstance(error, aio.AioRpcError), error
    return error.code()


def type_value(name: str) -> Any:
    return agent_type_value(name)


def event_kinds(messages: Sequence[Any]) -> list[str]:
    return [m.WhichOneof("event") for m in messages]


def health_stub(channel: aio.Channel) -> Any:
    """The health stub (its type stubs omit the RPC attributes)."""
    return health_pb2_grpc.HealthStub(channel)


def details(error: aio.AioRpcError) -> str:
    return error.details() or ""


async def read(call: Any) -> Any:
    """The next message of a streaming call read with read(); fails at the end of the stream."""
    message = await call.read()
    assert message is not aio.EOF, "the stream ended early"
    return message


async def read_rest(call: Any) -> list[Any]:
    """The remaining messages of a call already read with read() (the two styles do not mix)."""
    messages = []
    while (message := await call.read()) is not aio.EOF:
        messages.append(message)
    return messages


async def trailers(call: Any) -> dict[str, str]:
    """A finished call's trailing metadata as a dict."""
    return {key: str(value) for key, value in await call.trailing_metadata()}


def free_port() -> int:
    """A loopback port that nothing listens on now (for servers that need a fixed port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Scrape:
    """One /metrics page, parsed: sample values by name and labels."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    families: dict[str, str] = field(default_factory=dict)
    """Every metric family on the page, sampled or not, with its type (`counter`, …); counters
    are named without `_total`, as the parser names them."""

    def get(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels; 0 when it does not exist (yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include these."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def labels(self, name: str, label: str) -> set[str]:
        """Every value `label` takes among the samples of `name`."""
        return {dict(ls)[label] for n, ls in self.samples if n == name and label in dict(ls)}


async def scrape_metrics(port: int) -> Scrape:
    """GET /metrics over HTTP (in a thread: never block the loop serving it) and parse it."""

    def fetch() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return str(response.read().decode())

    text = await asyncio.to_thread(fetch)
    families = list(text_string_to_metric_families(text))
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in families
        for sample in family.samples
    }
    return Scrape(samples, {family.name: family.type for family in families})


def assert_sequences(messages: Sequence[Any], *, after: int = 0) -> None:
    """Contract §1: sequences strictly increase from after `after` (merged deltas may skip)."""
    sequences = [m.sequence for m in messages]
    assert sequences == sorted(set(sequences)), f"not strictly increasing: {sequences}"
    assert sequences[0] > after


def merged_view(messages: Sequence[Any]) -> list[tuple[str, int, Any]]:
    """The events as (kind, sequence, content), adjacent text deltas of one step joined as a
    reader behind the run would get them: equal views mean the same stream, however merged."""
    view: list[tuple[str, int, Any]] = []
    for m in messages:
        kind = m.WhichOneof("event")
        step = (
            m.step_index
            if "step_index" in m.DESCRIPTOR.fields_by_name and m.HasField("step_index")
            else None
        )
        if kind == "text_delta" and view and view[-1][0] == "text_delta":
            previous_step, text = view[-1][2]
            if previous_step == step:
                view[-1] = (kind, m.sequence, (step, text + m.text_delta.text))
                continue
        content = (step, m.text_delta.text) if kind == "text_delta" else getattr(m, kind)
        view.append((kind, m.sequence, content))
    return view


def streamed_text(messages: Sequence[Any]) -> str:
    """The text deltas of a stream, joined."""
    return "".join(m.text_delta.text for m in messages if m.WhichOneof("event") == "text_delta")
