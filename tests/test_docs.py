"""The docs cannot fall behind the code: every setting and every metric is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from woolly_grpc.config import Settings
from woolly_grpc.observability.metrics import Metrics

OPERATIONS = (Path(__file__).parent.parent / "docs" / "operations.md").read_text()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_in_the_operations_guide(name: str) -> None:
    assert f"`WOOLLY_{name.upper()}`" in OPERATIONS


def metric_names() -> list[str]:
    names = []
    for collector in Metrics().registry.collect():
        suffix = "_total" if collector.type == "counter" else ""
        names.append(collector.name + suffix)
    return sorted(names)


@pytest.mark.parametrize("name", metric_names())
def test_every_metric_is_in_the_operations_guide(name: str) -> None:
    assert f"`{name}`" in OPERATIONS


def test_the_lists_are_not_empty() -> None:
    assert len(Settings.model_fields) >= 19
    assert "grpc_server_handled_total" in metric_names() and "active_agents" in metric_names()


def rpc_names() -> list[str]:
    from woolly_grpc._gen.woolly.v1 import agent_service_pb2

    return [m.name for m in agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"].methods]


@pytest.mark.parametrize("rpc", rpc_names())
def test_every_rpc_is_in_the_api_guide(rpc: str) -> None:
    api = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    assert f"| `{rpc}` |" in api
