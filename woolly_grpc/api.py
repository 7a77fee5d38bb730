"""Names of the wire API that the server, the client and the CLI share, each written once.

Light on purpose (generated messages only): the client and the CLI import it without the server.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._gen.woolly.v1 import agent_pb2, agent_service_pb2

try:
    VERSION = version("woolly-grpc")
    """The installed package's version (GetServerStatus reports it)."""
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    VERSION = "0.0.0"

SERVICE_NAME = agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
"""`woolly.v1.AgentService`."""

CACHE_TRAILER = "woolly-cache"
"""Trailing metadata of every cacheable call: `hit`, `miss`, `bypass` or `coalesced`."""
AGE_TRAILER = "woolly-cache-age-s"
"""Trailing metadata of a cache hit: the entry's age in whole seconds."""
RUN_ID_METADATA = "woolly-run-id"
"""Initial metadata of a run's stream (StreamExecute, ExecuteChain, WatchRun), sent as soon as
the server has the run: a client that loses the stream before its first event can resume it."""
RUN_ENDED_TRAILER = "woolly-run-ended"
"""Trailing metadata of a call that ends with its run's own status (`failed`, `cancelled`), not
a transport's: a client must not resume such a stream."""

_PREFIX = "AGENT_TYPE_"
_LABELS: dict[int, str] = {
    value: name.removeprefix(_PREFIX).lower()
    for name, value in agent_pb2.AgentType.items()
    if value != agent_pb2.AGENT_TYPE_UNSPECIFIED
}
AGENT_TYPE_LABELS: tuple[str, ...] = tuple(_LABELS.values())
"""Every built-in agent type by its short name (`simplifier`, …), in enum order."""


def method_path(method: str) -> str:
    """The full path of an AgentService method, e.g. `/woolly.v1.AgentService/Execute`."""
    return f"/{SERVICE_NAME}/{method}"


def agent_type_label(value: int) -> str:
    """The short name of an AgentType value (`simplifier`); `unknown` for any other number."""
    return _LABELS.get(value, "unknown")


def agent_type_value(agent_type: str | int) -> agent_pb2.AgentType.ValueType:
    """The AgentType value of a short name (`simplifier`), an enum name, or a number.

    Raises:
        ValueError: a name that is no agent type.
    """
    if isinstance(agent_type, int):
        return agent_pb2.AgentType.ValueType(agent_type)
    name = agent_type.upper()
    try:
        return agent_pb2.AgentType.Value(name if name.startswith(_PREFIX) else _PREFIX + name)
    except ValueError:
        known = ", ".join(AGENT_TYPE_LABELS)
        raise ValueError(f"unknown agent type {agent_type!r}; known: {known}") from None
