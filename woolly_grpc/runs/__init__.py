"""Runs: every execution is a task whose numbered events any reader replays and follows.

`manager.RunManager` starts, finds, follows and cancels runs; `owned.OwnedRun` is a run this
replica executes; `journal.RunJournal` shares runs with other replicas through the store (its
`writer.RunWriter` writes this replica's runs, `leases.Leases` holds and settles leases, `keys`
names where a run lives); `flights.Flights` lets identical calls share the run in flight;
`limits` is what a full replica refuses.
"""

from .control import CONTROL_CHANNEL
from .journal import RunJournal
from .limits import Refusals, ReplaySlots
from .manager import EventSource, RunManager, RunObserver

__all__ = [
    "CONTROL_CHANNEL",
    "EventSource",
    "Refusals",
    "ReplaySlots",
    "RunJournal",
    "RunManager",
    "RunObserver",
]
