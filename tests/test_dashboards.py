"""The Grafana dashboard and the Prometheus alert rules in deploy/ agree with the server.

Every metric a rule or a panel names must be on a running server's /metrics; the rules must
pass `promtool check rules`; every alert is explained in docs/operations.md.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from tests.helpers import free_port, scrape_metrics, type_value
from woolly_grpc._gen.woolly.v1 import agent_service_pb2
from woolly_grpc.config import Settings
from woolly_grpc.testing import RunningServer, running_server

ROOT = Path(__file__).parent.parent
RULES = ROOT / "deploy" / "prometheus" / "woolly-alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "woolly-dashboard.json"
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()

NEEDS_A_FAILURE = {"agent_model_retries_total", "cache_errors_total"}
"""Labelled by what failed: no sample until a model request is retried or the cache store
fails, so for these the page must declare the family (`# TYPE`), which it does from start."""

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_KEYWORDS |= {"and", "or", "unless", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads.

    Strings, label matchers, ranges and grouping label lists are cut out first; of the
    identifiers left, those called like functions and the keywords are not metrics.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*(?=\s*(\()?)", text):
        if match.group(1) is None and match.group(0).lower() not in _KEYWORDS:
            names.add(match.group(0))
    return names


def test_the_parser_finds_metrics_not_functions_or_labels() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (job, le) (rate(a_seconds_bucket{x="y"}[5m]))) > 1 '
        'or max by (instance) (b_failing{job=~"$job"}) == 1 and on (job) c_total'
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_failing", "c_total"}


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def panels() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return [p for p in found if p["type"] != "row"]


def named_metrics() -> set[str]:
    exprs = [rule["expr"] for rule in rules()]
    exprs += [target["expr"] for panel in panels() for target in panel["targets"]]
    return set().union(*(metric_names(e) for e in exprs))


async def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/install_system_deps.sh installs it)")
    process = await asyncio.create_subprocess_exec(
        promtool,
        *("check", "rules", str(RULES)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, out.decode()
    assert f"SUCCESS: {len(rules())} rules found" in out.decode()


def test_every_alert_is_explained_in_the_operations_guide() -> None:
    for rule in rules():
        assert f"| `{rule['alert']}` |" in OPERATIONS, rule["alert"]
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "job"}
    for panel in panels():
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert 'job=~"$job"' in target["expr"], (panel["title"], target["expr"])


@pytest_asyncio.fixture(scope="module")
async def metered(settings: Settings) -> AsyncIterator[RunningServer]:
    with_metrics = settings.model_copy(update={"metrics_port": free_port()})
    async with running_server(with_metrics) as server:
        yield server


async def drive(server: RunningServer) -> None:
    """A miss, a hit, a stream with tool calls and a chain: every agent metric gets a sample."""
    stub, query = server.stub, f"what does it do? {uuid.uuid4().hex}"
    request = agent_service_pb2.ExecuteRequest(
        repository_name="calculator", agent_type=type_value("summarizer"), user_query=query
    )
    await stub.Execute(request, timeout=30)
    await stub.Execute(request, timeout=30)
    stream = agent_service_pb2.StreamExecuteRequest(
        repository_name="calculator", agent_type=type_value("tester"), user_query=query
    )
    [m async for m in stub.StreamExecute(stream, timeout=30)]
    chain = agent_service_pb2.ExecuteChainRequest(
        repository_name="calculator",
        agent_chain=[type_value("summarizer"), type_value("documentation")],
        user_query=query,
    )
    [m async for m in stub.ExecuteChain(chain, timeout=30)]


async def test_every_metric_the_rules_and_dashboard_name_is_exported(
    metered: RunningServer,
) -> None:
    await drive(metered)
    assert metered.app.metrics_endpoint is not None
    page = await scrape_metrics(metered.app.metrics_endpoint.port)
    sampled = {name for name, _labels in page.samples}
    names = named_metrics()
    assert {"grpc_server_handling_seconds_bucket", "agent_tokens_by_tenant_total"} <= names

    missing = {n for n in names - sampled if n not in NEEDS_A_FAILURE}
    assert missing == set()
    declared = {f"{family}_total" for family, kind in page.families.items() if kind == "counter"}
    assert declared >= NEEDS_A_FAILURE
