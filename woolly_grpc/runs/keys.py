"""Where a run lives in the shared store: its keys and its channel.

Keys carry the run id as a hash tag (`{ID}`), so a run's keys share one Redis Cluster slot.
"""

from __future__ import annotations


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
