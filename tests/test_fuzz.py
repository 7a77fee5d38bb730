"""Fuzzing: random and malformed requests, through real gRPC, against one real server.

Properties, for every request: the server answers (never crashes), with a code from the method's
allowed set below and never INTERNAL or UNKNOWN; every error has a message; INVALID_ARGUMENT names
its fields in a BadRequest whenever the payload was a well-formed message. Afterwards the server
is still SERVING and runs a normal Execute, and its own per-code counters show no INTERNAL or
UNKNOWN answer at all.

The server is this module's own (its database, cache and runs are not shared with other tests):
the fuzzer creates saved agents and fills the cache. It serves the `local` engine; valid runs read
the tiny `empty_repo` fixture, so they cost a few ms. `FUZZ_EXAMPLES=10` runs ten times as many
cases (the per-test timeout grows with it).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.message import DecodeError, Message
from grpc import aio
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.helpers import details, health_stub, violations
from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2
from woolly_grpc.config import Settings
from woolly_grpc.core import REPOSITORY_TOOLSET
from woolly_grpc.saved_agents.rules import OUTPUT_ONLY_FIELDS, WRITABLE_FIELDS
from woolly_grpc.testing import RunningServer, running_server

SCALE = float(os.environ.get("FUZZ_EXAMPLES", "1"))
"""Multiplies every test's number of cases (e.g. 10 for a long run by hand)."""
pytestmark = pytest.mark.timeout(max(60.0, 60.0 * SCALE))

pb = agent_service_pb2
Code = grpc.StatusCode
SERVICE = "/woolly.v1.AgentService/"
SUMMARIZER, CHAT = agent_pb2.AGENT_TYPE_SUMMARIZER, agent_pb2.AGENT_TYPE_CHAT_ASSISTANT
TIMEOUT = 30.0
TOOLS = sorted(REPOSITORY_TOOLSET.tools)
METHODS = pb.DESCRIPTOR.services_by_name["AgentService"].methods_by_name


def fuzz(examples: int) -> Callable[[Any], Any]:
    """Hypothesis settings for `examples` cases (scaled), no per-example deadline.

    `too_slow` and `data_too_large` are suppressed: the huge fields are the point, and each case
    is a real RPC whose time is the server's, not the generator's.
    """
    return settings(
        max_examples=max(1, round(examples * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Which codes each method may answer bad or random input with, and why:
# - every run (Execute, StreamExecute, ExecuteChain): INVALID_ARGUMENT for bad fields, NOT_FOUND
#   for an unknown repository / saved agent or an ONLY_IF_CACHED miss, FAILED_PRECONDITION for an
#   inactive saved agent, RESOURCE_EXHAUSTED for a run that hits its model-request or tool-call
#   limit. No UNAVAILABLE: the local engine and the memory store have nothing to be unavailable.
# - GetRun / CancelRun / RetryRun: unknown ids are NOT_FOUND; RetryRun of a run still running is
#   FAILED_PRECONDITION (and its new run may fail like any run).
# - WatchRun: OUT_OF_RANGE for an after_sequence past a finished run's last event.
# - saved agents: ALREADY_EXISTS for a taken name (create, or an update renaming onto one).
_RUN = {
    Code.OK,
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.FAILED_PRECONDITION,
    Code.RESOURCE_EXHAUSTED,
}
ALLOWED: dict[str, set[Code]] = {
    "ListAgentTypes": {Code.OK},
    "GetServerStatus": {Code.OK},
    "Execute": _RUN,
    "StreamExecute": _RUN,
    "ExecuteChain": _RUN,
    "GetRun": {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND},
    "CancelRun": {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND},
    "RetryRun": _RUN,
    "WatchRun": {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.OUT_OF_RANGE},
    "CreateAgent": {Code.OK, Code.INVALID_ARGUMENT, Code.ALREADY_EXISTS},
    "GetAgent": {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND},
    "ListAgents": {Code.OK, Code.INVALID_ARGUMENT},
    "UpdateAgent": {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.ALREADY_EXISTS},
    "DeleteAgent": {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND},
}
assert set(ALLOWED) == set(METHODS), "a new method needs its allowed codes here"


class Fuzz:
    """The module's server, and ids of things that exist on it (so fuzzed ids sometimes hit)."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.run_ids: list[str] = []
        self.agent_ids: list[str] = []


@pytest_asyncio.fixture(scope="module")
async def fuzz_server(
    repos_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fuzz]:
    database = tmp_path_factory.mktemp("fuzz-database") / "woolly.db"
    own = Settings(
        repos_root=repos_root,
        orphan_grace_s=0,
        database_url=f"sqlite:///{database}",
        metrics_port=0,
    )
    async with running_server(own) as server:
        found = Fuzz(server)
        for agent_type, active in [(SUMMARIZER, True), (CHAT, False)]:
            agent = agent_pb2.AgentDefinition(name=f"fuzz-{active}", base_type=agent_type)
            agent.is_active = active
            created = await server.stub.CreateAgent(pb.CreateAgentRequest(agent=agent))
            found.agent_ids.append(created.agent.id)
        scoped = agent_pb2.AgentDefinition(
            name="fuzz-scoped",
            base_type=agent_pb2.AGENT_TYPE_SIMPLIFIER,
            repository="calculator",
            tools=TOOLS[:1],
        )
        found.agent_ids.append(
            (await server.stub.CreateAgent(pb.CreateAgentRequest(agent=scoped))).agent.id
        )
        request = pb.ExecuteRequest(
            repository_name="empty_repo", agent_type=SUMMARIZER, user_query="hi"
        )
        found.run_ids.append((await server.stub.Execute(request, timeout=TIMEOUT)).run_id)
        yield found


ODD_TEXT = [
    "",
    " ",
    "\x00",
    "\x00" * 64,
    "\u202e\u202d",  # bidi overrides
    "\ufeff",  # BOM
    "\u200b",  # zero-width space
    "\U0010ffff",
    "\U0001f469\u200d\U0001f4bb",  # ZWJ sequence
    "e\u0301" * 40,  # combining marks
    "\ufdfd",
    "\r\n\t\x0b\x0c",
    "%s%n%x{0}",
    "${jndi:ldap://x}",
    "'; DROP TABLE agents; --",
    "null",
    "\\x00",
]
huge_text = st.builds(
    lambda piece, n: piece * n,
    st.sampled_from(["x", "é", "\x00", "\U0001f999", "ab\n", "../"]),
    st.integers(1_000, 120_000),
)
text = st.one_of(st.text(max_size=40), st.sampled_from(ODD_TEXT), huge_text)
REPOSITORIES = [
    "empty_repo",
    "calculator",
    "nope",
    "outside_secret.txt",  # a file beside the repositories
    ".",
    "..",
    "../calculator",
    "../../etc/passwd",
    "/etc",
    "/",
    "calculator/..",
    "empty_repo/",
    "./empty_repo",
    "empty_repo/NOTES.txt",
    "~",
    "..\\calculator",
    "C:\\Windows",
    "%2e%2e",
    "empty_repo\x00",
    " empty_repo",
    ".git",
    "\uff45mpty_repo",  # fullwidth e
    "empty_repo\u200b",
    "a" * 100,
    "a" * 101,
    "x/" * 5_000,
]
repository = st.one_of(
    st.just("empty_repo"), st.sampled_from(REPOSITORIES), st.text(max_size=30), huge_text
)
enum_value: st.SearchStrategy[Any] = st.one_of(st.integers(0, 7), st.integers(-(2**31), 2**31 - 1))
agent_type: st.SearchStrategy[Any] = st.one_of(st.integers(1, 6), enum_value)
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(),  # NaN and ±Infinity included: JSON has neither
    st.integers(-(2**70), 2**70),
    st.sampled_from([1e308, -1e308, 5e-324, 2.0**53 + 1, -0.0]),
    text,
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def nested(depth: int, as_list: bool) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value] if as_list else {"k": value}
    return value


context = st.one_of(
    st.dictionaries(st.text(max_size=12), json_value, max_size=5),
    # Deeper than this a typed client cannot build it; test_raw_bytes sends deeper ones.
    st.builds(lambda d, lst: {"deep": nested(d, lst)}, st.integers(1, 32), st.booleans()),
    st.builds(lambda n: {"blob": "y" * n}, st.integers(200_000, 300_000)),
)
duration = st.one_of(
    st.none(),
    st.builds(
        duration_pb2.Duration,
        seconds=st.one_of(st.integers(-3600, 3600), st.integers(-(2**63), 2**63 - 1)),
        nanos=st.one_of(st.integers(-999_999_999, 999_999_999), st.integers(-(2**31), 2**31 - 1)),
    ),
)


policy: st.SearchStrategy[Any] = st.one_of(st.integers(0, 3), enum_value)


@st.composite
def run_options(draw: st.DrawFn) -> agent_pb2.RunOptions | None:
    if draw(st.booleans()):
        return None
    options = agent_pb2.RunOptions(cache_policy=draw(policy), detach=draw(st.booleans()))
    for field in ("cache_ttl", "cache_max_age"):
        if (value := draw(duration)) is not None:
            getattr(options, field).CopyFrom(value)
    return options


sane_options = st.one_of(
    st.none(),
    st.builds(
        agent_pb2.RunOptions,
        cache_policy=st.sampled_from(
            [agent_pb2.CACHE_POLICY_BYPASS, agent_pb2.CACHE_POLICY_REFRESH]
        ),
        cache_ttl=st.builds(duration_pb2.Duration, seconds=st.integers(0, 3600)),
        detach=st.booleans(),
    ),
)
sane_context = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=8), st.one_of(st.integers(-9, 9), st.text(max_size=8))),
)


RUN_PARTS = ("repository", "query", "agent", "context", "options")


@st.composite
def run_fields(draw: st.DrawFn, fuzz: Fuzz, chain: bool = False) -> dict[str, Any]:
    """A run request's fields: a random few of them fuzzed, the others sane.

    Sane fields keep many cases valid, so that odd but acceptable values (queries, contexts,
    options, saved agents) reach the run itself rather than stopping at the first check.
    """
    wild = draw(st.sets(st.sampled_from(RUN_PARTS)))
    fields: dict[str, Any] = {
        "repository_name": draw(repository if "repository" in wild else st.just("empty_repo")),
        "user_query": draw(text if "query" in wild else st.text(min_size=1, max_size=40)),
    }
    if "agent" in wild:
        fields |= draw(chain_agents(fuzz) if chain else agent_choice(fuzz))
    elif chain:
        fields["agent_chain"] = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
        fields["mode"] = draw(st.integers(0, 2))
    else:
        fields["agent_type"] = draw(st.integers(1, 6))
    options = run_options() if "options" in wild else sane_options
    if (value := draw(options)) is not None:
        fields["options"] = value
    if (values := draw(context if "context" in wild else sane_context)) is not None:
        struct = struct_pb2.Struct()
        struct.update(values)
        fields["context"] = struct
    return fields


def agent_choice(fuzz: Fuzz) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.builds(lambda t: {"agent_type": t}, agent_type),
        st.builds(lambda i: {"agent_id": i}, st.one_of(st.sampled_from(fuzz.agent_ids), text)),
        st.just({}),
    )


@st.composite
def chain_agents(draw: st.DrawFn, fuzz: Fuzz) -> dict[str, Any]:
    step = st.one_of(
        st.builds(lambda t: agent_pb2.ChainStep(agent_type=t), agent_type),
        st.builds(
            lambda i: agent_pb2.ChainStep(agent_id=i),
            st.one_of(st.sampled_from(fuzz.agent_ids), text),
        ),
        st.just(agent_pb2.ChainStep()),
    )
    fields: dict[str, Any] = {"mode": draw(st.one_of(st.integers(0, 2), enum_value))}
    if draw(st.booleans()):
        fields["agent_chain"] = draw(st.lists(agent_type, max_size=12))
    if draw(st.booleans()):
        fields["steps"] = draw(st.lists(step, max_size=12))
    return fields


def timestamp() -> st.SearchStrategy[timestamp_pb2.Timestamp]:
    return st.builds(
        timestamp_pb2.Timestamp,
        seconds=st.integers(-(2**63), 2**63 - 1),
        nanos=st.integers(-(2**31), 2**31 - 1),
    )


@st.composite
def agent_definition(draw: st.DrawFn, fuzz: Fuzz) -> agent_pb2.AgentDefinition:
    """A saved agent's definition: a random few fields fuzzed, the others sane."""
    wild = draw(st.sets(st.sampled_from(AGENT_PARTS)))

    def part(name: str, sane: st.SearchStrategy[Any], fuzzed: st.SearchStrategy[Any]) -> Any:
        return draw(fuzzed if name in wild else sane)

    agent = agent_pb2.AgentDefinition(
        id=part("id", st.sampled_from(fuzz.agent_ids), text),
        name=part("name", st.builds(lambda n: f"agent-{n}", st.integers(0, 50)), text),
        description=part("description", st.text(max_size=40), text),
        system_prompt=part("system_prompt", st.text(max_size=40), text),
        base_type=part("base_type", st.integers(1, 6), agent_type),
        tools=part(
            "tools",
            st.lists(st.sampled_from(TOOLS), unique=True, max_size=3),
            st.lists(st.one_of(st.sampled_from(TOOLS), text), max_size=5),
        ),
        repository=part("repository", st.sampled_from(["", "empty_repo"]), repository),
    )
    if (
        active := part("is_active", st.sampled_from([None, True]), st.none() | st.booleans())
    ) is not None:
        agent.is_active = active
    if "output_only" in wild:  # ignored by the server
        agent.revision = draw(st.integers(-(2**63), 2**63 - 1))
        agent.create_time.CopyFrom(draw(timestamp()))
        agent.update_time.CopyFrom(draw(timestamp()))
    return agent


AGENT_PARTS = (
    "id",
    "name",
    "description",
    "system_prompt",
    "base_type",
    "tools",
    "repository",
    "is_active",
    "output_only",
)


async def expect(method: str, call: Any, *, parsed: bool = True) -> Any:
    """Finish one call and check how it ended against `ALLOWED[method]`; its response if OK.

    Args:
        method: The method called.
        call: The call (unary, or server-streaming: read to its end).
        parsed: Whether the payload was a well-formed request message.
    """
    try:
        if isinstance(call, aio.UnaryStreamCall):
            response = [message async for message in call]
        else:
            response = await call
    except aio.AioRpcError as error:
        code = error.code()
        event(code.name)  # `--hypothesis-show-statistics` shows what the cases got
        allowed = ALLOWED[method] | ({Code.INVALID_ARGUMENT} if not parsed else set())
        assert code in allowed, f"{method}: {code.name} {details(error)!r}"
        assert details(error).strip(), f"{method}: {code.name} without a message"
        if code == Code.INVALID_ARGUMENT and parsed:
            assert violations(error), f"{method}: INVALID_ARGUMENT without field violations"
        return None
    event("OK")
    return response


@fuzz(400)
@given(data=st.data())
async def test_execute(fuzz_server: Fuzz, data: st.DataObject) -> None:
    fields = data.draw(run_fields(fuzz_server))
    request = pb.ExecuteRequest(**fields)
    response = await expect("Execute", fuzz_server.server.stub.Execute(request, timeout=TIMEOUT))
    if response is not None and len(fuzz_server.run_ids) < 50:
        fuzz_server.run_ids.append(response.run_id)  # later GetRun / WatchRun cases find it


@fuzz(350)
@given(data=st.data())
async def test_stream_execute(fuzz_server: Fuzz, data: st.DataObject) -> None:
    fields = data.draw(run_fields(fuzz_server))
    request = pb.StreamExecuteRequest(**fields)
    await expect("StreamExecute", fuzz_server.server.stub.StreamExecute(request, timeout=TIMEOUT))


@fuzz(250)
@given(data=st.data())
async def test_execute_chain(fuzz_server: Fuzz, data: st.DataObject) -> None:
    fields = data.draw(run_fields(fuzz_server, chain=True))
    request = pb.ExecuteChainRequest(**fields)
    await expect("ExecuteChain", fuzz_server.server.stub.ExecuteChain(request, timeout=TIMEOUT))


def run_id(fuzz: Fuzz) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(fuzz.run_ids), text)


@fuzz(200)
@given(data=st.data())
async def test_get_run(fuzz_server: Fuzz, data: st.DataObject) -> None:
    request = pb.GetRunRequest(run_id=data.draw(run_id(fuzz_server)))
    await expect("GetRun", fuzz_server.server.stub.GetRun(request, timeout=TIMEOUT))


@fuzz(250)
@given(data=st.data())
async def test_watch_run(fuzz_server: Fuzz, data: st.DataObject) -> None:
    after = st.one_of(st.integers(-3, 30), st.integers(-(2**63), 2**63 - 1))
    request = pb.WatchRunRequest(
        run_id=data.draw(run_id(fuzz_server)), after_sequence=data.draw(after)
    )
    await expect("WatchRun", fuzz_server.server.stub.WatchRun(request, timeout=TIMEOUT))


@fuzz(300)
@given(data=st.data())
async def test_create_agent(fuzz_server: Fuzz, data: st.DataObject) -> None:
    request = pb.CreateAgentRequest()
    if data.draw(st.integers(0, 9)):  # now and then no agent at all
        request.agent.CopyFrom(data.draw(agent_definition(fuzz_server)))
    await expect("CreateAgent", fuzz_server.server.stub.CreateAgent(request, timeout=TIMEOUT))


@fuzz(300)
@given(data=st.data())
async def test_update_agent(fuzz_server: Fuzz, data: st.DataObject) -> None:
    path = st.one_of(
        st.sampled_from([*WRITABLE_FIELDS, *OUTPUT_ONLY_FIELDS, "*", "", "agent.name", "name.x"]),
        text,
    )
    request = pb.UpdateAgentRequest(agent=data.draw(agent_definition(fuzz_server)))
    if data.draw(st.booleans()):
        request.update_mask.paths.extend(data.draw(st.lists(path, max_size=4)))
    await expect("UpdateAgent", fuzz_server.server.stub.UpdateAgent(request, timeout=TIMEOUT))


@fuzz(150)
@given(data=st.data())
async def test_list_agents(fuzz_server: Fuzz, data: st.DataObject) -> None:
    page_size = st.one_of(st.integers(-2, 600), st.integers(-(2**31), 2**31 - 1))
    request = pb.ListAgentsRequest(
        repository=data.draw(st.sampled_from(["", "empty_repo"]) | repository),
        page_size=data.draw(page_size),
        page_token=data.draw(st.just("") | text),
    )
    await expect("ListAgents", fuzz_server.server.stub.ListAgents(request, timeout=TIMEOUT))


def valid_payloads() -> list[bytes]:
    context = struct_pb2.Struct()
    context.update({"a": [1, {"b": "c"}]})
    messages: list[Message] = [
        pb.ExecuteRequest(
            repository_name="empty_repo",
            agent_type=SUMMARIZER,
            user_query="q",
            context=context,
            options=agent_pb2.RunOptions(cache_policy=agent_pb2.CACHE_POLICY_BYPASS),
        ),
        pb.ExecuteChainRequest(
            repository_name="empty_repo",
            agent_chain=[SUMMARIZER, CHAT],
            user_query="q",
            mode=agent_pb2.CHAIN_MODE_PARALLEL,
        ),
        pb.WatchRunRequest(run_id="0123456789abcdef", after_sequence=3),
        pb.CreateAgentRequest(
            agent=agent_pb2.AgentDefinition(name="n", base_type=SUMMARIZER, tools=TOOLS[:2])
        ),
        pb.UpdateAgentRequest(agent=agent_pb2.AgentDefinition(id="x", name="m")),
        pb.ListAgentsRequest(page_size=3, page_token="abc"),
    ]
    return [m.SerializeToString() for m in messages]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid payload with bytes flipped, cut, inserted or duplicated."""
    raw = bytearray(draw(st.sampled_from(valid_payloads())))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw)))
        match draw(st.integers(0, 3)):
            case 0 if at < len(raw):
                raw[at] = draw(st.integers(0, 255))
            case 1:
                del raw[at:]
            case 2:
                raw[at:at] = draw(st.binary(min_size=1, max_size=8))
            case _:
                raw += raw[:at]
    return bytes(raw)


def deep_payload(depth: int) -> bytes:
    """An ExecuteRequest whose context nests `depth` Structs (past protobuf's recursion limit)."""
    value = struct_pb2.Value(string_value="bottom")
    for _ in range(depth):
        outer = struct_pb2.Value()
        outer.struct_value.fields["k"].CopyFrom(value)
        value = outer
    request = pb.ExecuteRequest(repository_name="empty_repo", agent_type=SUMMARIZER, user_query="q")
    request.context.fields["deep"].CopyFrom(value)
    return request.SerializeToString()


payload = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=64, max_size=4096),
    mutated(),
    st.builds(deep_payload, st.integers(40, 300)),
    st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=4), st.integers(1, 200_000)),
)


def parses(method: str, raw: bytes) -> bool:
    request_type: Any = getattr(pb, METHODS[method].input_type.name)
    try:
        request_type.FromString(raw)
    except DecodeError:
        return False
    return True


@fuzz(900)
@given(method=st.sampled_from(sorted(METHODS)), raw=payload)
async def test_raw_bytes(fuzz_server: Fuzz, method: str, raw: bytes) -> None:
    channel = fuzz_server.server.channel
    path = SERVICE + method
    # No serializers: the bytes go on the wire as they are, and come back as bytes.
    multi: Any = (
        channel.unary_stream(path)
        if METHODS[method].server_streaming
        else channel.unary_unary(path)
    )
    await expect(method, multi(raw, timeout=TIMEOUT), parsed=parses(method, raw))


@fuzz(150)
@given(raw=payload)
async def test_raw_bytes_to_health(fuzz_server: Fuzz, raw: bytes) -> None:
    check: Any = fuzz_server.server.channel.unary_unary("/grpc.health.v1.Health/Check")
    try:
        await check(raw, timeout=TIMEOUT)
    except aio.AioRpcError as error:
        # Garbage is INVALID_ARGUMENT; a service name it does not know is NOT_FOUND, which
        # grpcio-health-checking's servicer sends without a message (as the protocol has it).
        assert error.code() in {Code.NOT_FOUND, Code.INVALID_ARGUMENT}, details(error)
        assert details(error) or error.code() == Code.NOT_FOUND


def _nan_context() -> pb.ExecuteRequest:
    request = pb.ExecuteRequest(repository_name="empty_repo", agent_type=SUMMARIZER, user_query="q")
    request.context.update({"x": [1.0, float("inf")]})
    return request


def _huge_duration() -> pb.ExecuteRequest:
    request = pb.ExecuteRequest(repository_name="empty_repo", agent_type=SUMMARIZER, user_query="q")
    request.options.cache_max_age.seconds = 2**62  # beyond Duration's range and timedelta's
    return request


FOUND: dict[str, tuple[str, Any, Code, str | None]] = {
    # name: (method, request or raw payload, code, the field a BadRequest must name)
    "corrupt payload": ("Execute", b"\xff\xfe garbage", Code.INVALID_ARGUMENT, None),
    "context nested past the recursion limit": (
        "Execute",
        deep_payload(120),
        Code.INVALID_ARGUMENT,
        None,
    ),
    "NaN or Infinity in the context": ("Execute", _nan_context(), Code.INVALID_ARGUMENT, "context"),
    "duration beyond its range": (
        "Execute",
        _huge_duration(),
        Code.INVALID_ARGUMENT,
        "options.cache_max_age",
    ),
    "a huge unknown run id, quoted in the message": (
        "GetRun",
        pb.GetRunRequest(run_id="r" * 50_000),
        Code.NOT_FOUND,
        None,
    ),
    "thousands of bad fields": (
        "ExecuteChain",
        pb.ExecuteChainRequest(
            repository_name="empty_repo",
            user_query="q",
            steps=[agent_pb2.ChainStep(agent_id="") for _ in range(5_000)],
        ),
        Code.INVALID_ARGUMENT,
        "steps[0].agent_id",
    ),
    "a huge unknown tool name, quoted in the violation": (
        "CreateAgent",
        pb.CreateAgentRequest(
            agent=agent_pb2.AgentDefinition(
                name="n", base_type=SUMMARIZER, tools=["\u00e9" * 9_000]
            )
        ),
        Code.INVALID_ARGUMENT,
        "agent.tools",
    ),
}


@pytest.mark.parametrize("case", FOUND)
async def test_what_the_fuzzer_found(fuzz_server: Fuzz, case: str) -> None:
    method, request, code, field = FOUND[case]
    raw = request if isinstance(request, bytes) else request.SerializeToString()
    path = SERVICE + method
    channel = fuzz_server.server.channel
    multi: Any = (
        channel.unary_stream(path)
        if METHODS[method].server_streaming
        else channel.unary_unary(path)
    )

    with pytest.raises(aio.AioRpcError) as caught:
        if METHODS[method].server_streaming:
            async for _ in multi(raw, timeout=TIMEOUT):
                pass
        else:
            await multi(raw, timeout=TIMEOUT)

    assert caught.value.code() == code, details(caught.value)
    # The status (message + details) fits in the client's 8 KiB metadata limit.
    assert 0 < len(details(caught.value).encode()) <= 1_024
    if field is not None:
        assert field in violations(caught.value)


async def test_a_request_stream_of_garbage_is_invalid(fuzz_server: Fuzz) -> None:
    """Reflection reads a request stream: a message in it that does not parse ends the call."""
    info: Any = fuzz_server.server.channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    )

    async def requests() -> AsyncIterator[bytes]:
        yield b"\xff\xfe garbage"

    with pytest.raises(aio.AioRpcError) as caught:
        async for _ in info(requests(), timeout=TIMEOUT):
            pass

    assert caught.value.code() == Code.INVALID_ARGUMENT
    assert "does not parse" in details(caught.value)


async def test_server_is_healthy_after_fuzzing(fuzz_server: Fuzz) -> None:
    server = fuzz_server.server
    health = await health_stub(server.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING

    request = pb.ExecuteRequest(
        repository_name="calculator", agent_type=SUMMARIZER, user_query="what does it do?"
    )
    response = await server.stub.Execute(request, timeout=TIMEOUT)
    assert response.result.content

    status = await server.stub.GetServerStatus(pb.GetServerStatusRequest(), timeout=10)
    answered = dict(status.requests_by_code)
    assert not {"INTERNAL", "UNKNOWN"} & set(answered), answered
