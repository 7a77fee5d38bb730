"""The control channel between replicas: a cancel request reaches the replica running the run.

A replica that does not run a run publishes `cancel <id> <reason>`; every replica listens, and the
one running it cancels it. A lost message costs no run: CancelRun then says RUNNING.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from woolly_grpc._gen.woolly.v1 import run_pb2
from woolly_grpc.store import Store, StoreError

_log = logging.getLogger(__name__)

CONTROL_CHANNEL = "runs:control"
"""Replicas ask each other `cancel <id> <reason>` here (a lost one: CancelRun says RUNNING)."""

CancelRequested = Callable[[str, run_pb2.CancelReason.ValueType], None]
"""Told of each cancel request heard: the run's id and the reason."""


async def ask_to_cancel(store: Store, run_id: str, reason: run_pb2.CancelReason.ValueType) -> None:
    """Ask whichever replica runs the run to cancel it."""
    await store.publish(CONTROL_CHANNEL, f"cancel {run_id} {reason}".encode())


async def listen(
    store: Store, on_cancel: CancelRequested, ready: asyncio.Event, retry_s: float
) -> None:
    """Hear other replicas' cancel requests until cancelled.

    `ready` is set once listening, or once listening failed (it is tried again after `retry_s`).
    """
    while True:
        try:
            async with store.subscribe(CONTROL_CHANNEL) as messages:
                ready.set()
                async for message in messages:
                    try:
                        _on_control(message.decode().split(), on_cancel)
                    except Exception:  # one bad message must not deafen this replica
                        _log.exception("ignored a run control message")
        except StoreError as exc:
            _log.warning("run control channel lost (%s); listening again shortly", exc)
            ready.set()
            await asyncio.sleep(retry_s)


def _on_control(words: list[str], on_cancel: CancelRequested) -> None:
    if len(words) != 3 or words[0] != "cancel" or not words[2].isdigit():
        return
    on_cancel(words[1], run_pb2.CancelReason.ValueType(int(words[2])))
