"""`WOOLLY_WORKERS` > 1: several server processes on one port, under one supervisor.

The supervisor (`supervisor.py`, the process `woolly-grpc serve` started) claims the port, starts
the workers, serves the one `/metrics` of them all, forwards SIGTERM and SIGINT, and exits as
they do. Each worker (`worker.py`) is a whole server in a fresh interpreter, with its own event
loop, sharing the port through SO_REUSEPORT and its runs and cache through Redis.
"""

from __future__ import annotations

from .supervisor import supervise

__all__ = ["supervise"]
