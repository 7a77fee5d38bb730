"""woolly_grpc: Woolly's code-analysis agents as an asyncio gRPC service."""

from importlib.metadata import PackageNotFoundError, version

from .client import WoollyClient
from .config import Settings
from .server import build, serve
from .testing import running_server

try:
    __version__ = version("woolly-grpc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["Settings", "WoollyClient", "__version__", "build", "running_server", "serve"]
