"""The curated public surface (the package's shape is pinned in test_layout.py)."""

from __future__ import annotations

import woolly_grpc
import woolly_grpc.core


def test_package_exports() -> None:
    assert woolly_grpc.__all__ == [
        "Settings",
        "WoollyClient",
        "__version__",
        "build",
        "running_server",
        "serve",
    ]


def test_core_exports() -> None:
    assert "AgentRunner" in woolly_grpc.core.__all__
    assert "ChainRunner" in woolly_grpc.core.__all__
    assert all(hasattr(woolly_grpc.core, name) for name in woolly_grpc.core.__all__)
