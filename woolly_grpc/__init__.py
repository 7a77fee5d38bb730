"""woolly_grpc: Woolly's code-analysis agents as an asyncio gRPC service."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .api import VERSION as __version__
from .client import WoollyClient
from .config import Settings

if TYPE_CHECKING:
    from .server import build, serve
    from .testing import running_server

__all__ = ["Settings", "WoollyClient", "__version__", "build", "running_server", "serve"]

_SERVER_NAMES = {"build": "server", "serve": "server", "running_server": "testing"}


def __getattr__(name: str) -> object:
    # The server side (pydantic-ai, MCP, SQLAlchemy) loads on first use, so that client
    # commands of the CLI start in a fraction of a second.
    if name in _SERVER_NAMES:
        from importlib import import_module

        return getattr(import_module(f".{_SERVER_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
