"""What a full replica refuses (RESOURCE_EXHAUSTED with RetryInfo), counted and logged.

New runs are limited per replica and per tenant (`RunSlots`); streams answered from stored
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


class RunSlots:
    """Bounds the runs executing at once, on this replica and per tenant.

    Args:
        maximum: Runs on this replica at most (`WOOLLY_MAX_CONCURRENT_RUNS`).
        tenant_maximum: Runs of one tenant at most (`WOOLLY_TENANT_MAX_CONCURRENT_RUNS`); None:
            only `maximum` applies.
        refusals: Counts and logs the runs refused at a limit.
    """

    def __init__(self, maximum: int, tenant_maximum: int | None, refusals: Refusals) -> None:
        self.maximum = maximum
        self.tenant_maximum = tenant_maximum
        self.refusals = refusals
        self.active = 0
        """Runs executing on this replica now."""
        self._by_tenant: dict[str, int] = {}
        """Runs executing per tenant (tenants with none are left out, so it stays small)."""

    def check(self, tenant: str) -> None:
        """Refuse a new run beyond the tenant's limit or the replica's (Overloaded).

        The tenant's comes first: a tenant at its own limit is told so, whatever the others do.
        """
        limit = self.tenant_maximum
        if limit is not None and self._by_tenant.get(tenant, 0) >= limit:
            raise self.refusals.refuse(
                "tenant", f"this tenant is running its maximum of {limit} concurrent runs"
            )
        if self.active >= self.maximum:
            raise self.refusals.refuse(
                "server", f"the server is running its maximum of {self.maximum} runs"
            )

    def take(self, tenant: str) -> None:
        """Take a slot for a run of this tenant (`give_back` it when the run ends)."""
        self.active += 1
        self._by_tenant[tenant] = self._by_tenant.get(tenant, 0) + 1

    def give_back(self, tenant: str) -> None:
        """Free the slot of a run of this tenant that ended, however it ended."""
        self.active -= 1
        left = self._by_tenant.pop(tenant, 1) - 1
        if left:
            self._by_tenant[tenant] = left


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
