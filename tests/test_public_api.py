"""The curated public surface, and the core's independence from the transport."""

from __future__ import annotations

import ast
from pathlib import Path

import woolly_grpc
import woolly_grpc.core

BANNED_IN_CORE = ("grpc", "google.protobuf", "prometheus_client", "redis", "woolly_grpc._gen")


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


def test_the_core_imports_no_transport() -> None:
    core = Path(woolly_grpc.core.__file__).parent
    offenders = []
    for path in core.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.startswith(BANNED_IN_CORE)]
    assert offenders == []
