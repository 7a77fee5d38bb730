"""Where a run lives in the shared store: its keys and its channel, and its text in its log.

Keys carry the run id as a hash tag (`{ID}`), so a run's keys share one Redis Cluster slot.
"""

from __future__ import annotations

from woolly_grpc._gen.woolly.v1 import agent_service_pb2
from woolly_grpc.store import Store


def record_key(run_id: str) -> str:
    """The store key of a run's record."""
    return f"run:{{{run_id}}}"


def log_key(run_id: str) -> str:
    """The store key of a run's event log."""
    return f"run:{{{run_id}}}:log"


def request_key(run_id: str) -> str:
    """The store key of a run's method and request."""
    return f"run:{{{run_id}}}:request"


def owner_key(run_id: str) -> str:
    """The store key of a run's owner lease."""
    return f"run:{{{run_id}}}:owner"


def watched_key(run_id: str) -> str:
    """The store key of a run's reader lease."""
    return f"run:{{{run_id}}}:watched"


def run_channel(run_id: str) -> str:
    """Where a run's new events and its end are announced."""
    return f"run:{{{run_id}}}"


async def streamed_text(store: Store, run_id: str, events: int) -> str:
    """The text deltas among a run's first `events` stored events, joined: its `partial_content`.

    A running run's record leaves that text to the log (the writer would otherwise rewrite the
    whole answer so far at every write), so a replica that does not own the run reads it here.
    """
    stored = (await store.read(log_key(run_id)))[:events]
    parsed = map(agent_service_pb2.WatchRunResponse.FromString, stored)
    return "".join(e.text_delta.text for e in parsed if e.WhichOneof("event") == "text_delta")
