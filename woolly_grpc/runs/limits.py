"""What a full replica refuses (RESOURCE_EXHAUSTED with RetryInfo), counted and logged.

New runs are limited per replica and per tenant (`RunManager`); streams answered from stored
events (cache-hit replays, WatchRun) by `ReplaySlots`. Every refusal is counted, and logged at
most once per interval with how many there were, so an overload is one line, not one per call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from woolly_grpc.core import Overloaded

Limit = Literal["server", "tenant", "replays"]
"""Which limit refused: runs on this replica, runs of the caller's tenant, replays."""

_log = logging.getLogger(__name__)


class Refusals:
    """Counts each refusal and logs them once per `every_s` with their number.

    Args:
        count: Called with the limit of each refusal (a metric's increment).
        every_s: Shortest time between two log lines.
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        count: Callable[[Limit], object] | None = None,
        *,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.count = count
        self.every_s = every_s
        self.clock = clock
        self._since_logged: dict[Limit, int] = {}
        self._logged_at: float | None = None

    def refuse(self, limit: Limit, message: str) -> Overloaded:
        """Count and maybe log a refusal; the exception to raise for it."""
        if self.count is not None:
            self.count(limit)
        self._since_logged[limit] = self._since_logged.get(limit, 0) + 1
        now = self.clock()
        if self._logged_at is None or now - self._logged_at >= self.every_s:
            counts = ", ".join(f"{n} at the {by} limit" for by, n in self._since_logged.items())
            _log.warning("overloaded, refusing work (RESOURCE_EXHAUSTED): %s; %s", counts, message)
            self._logged_at, self._since_logged = now, {}
        return Overloaded(f"{message}; retry shortly")


class ReplaySlots:
    """Bounds the streams answered from stored events at once (`WOOLLY_MAX_CONCURRENT_REPLAYS`).

    A replay costs no run, so the run limits do not see it; but a client that reads nothing
    holds its stream in memory (up to its HTTP/2 window, after which writes wait), so the
    number of replays in flight is what bounds that memory.
    """

    def __init__(self, maximum: int, refusals: Refusals) -> None:
        self.maximum = maximum
        self.refusals = refusals
        self.active = 0

    def take(self) -> None:
        """Take a slot for one replay (`give_back` it when done), or raise Overloaded."""
        if self.active >= self.maximum:
            raise self.refusals.refuse(
                "replays", f"the server is replaying its maximum of {self.maximum} streams"
            )
        self.active += 1

    def give_back(self) -> None:
        """Free the slot of a replay that ended, however it ended."""
        self.active -= 1
