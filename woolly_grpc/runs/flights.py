"""Singleflight: identical calls share the one run in flight that computes their answer.

The key is the call's result-cache key, which covers everything the answer depends on (method,
request, tenant, model, prompt version, saved-agent revisions). A caller whose key has a run in
flight joins it as one more reader instead of starting a second run and a second model bill;
its own cancellation affects only itself, and the run stops when its last reader leaves.
"""

from __future__ import annotations

from .owned import OwnedRun


class Flights:
    """The runs in flight by key, on this replica."""

    def __init__(self) -> None:
        self._by_key: dict[str, OwnedRun] = {}

    def join(self, key: str | None, *, detach: bool) -> OwnedRun | None:
        """The run computing `key`, if one is in flight.

        Options are not in the key, so a caller asking for `detach` may join a run started
        without it: the run is then detached (it goes on to its end whoever stays).
        """
        run = self._by_key.get(key) if key is not None else None
        if run is not None and detach:
            run.detach = True
        return run

    def take_off(self, key: str | None, run: OwnedRun) -> None:
        """`run` now computes `key`: identical calls join it until it lands."""
        if key is not None:
            run.flight_key = key
            self._by_key[key] = run

    def land(self, run: OwnedRun) -> None:
        """`run` ended: later calls with its key start afresh."""
        if run.flight_key is not None and self._by_key.get(run.flight_key) is run:
            del self._by_key[run.flight_key]
