"""How the CLI prints: results, streamed events as they arrive, server status, RPC errors."""

from __future__ import annotations

import sys
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status

from woolly_grpc._gen.woolly.v1 import agent_pb2, agent_service_pb2, run_pb2
from woolly_grpc.api import agent_type_label


def print_status(status: agent_service_pb2.GetServerStatusResponse, *, as_json: bool) -> None:
    """The server's status as a small table, or as protobuf JSON."""
    if as_json:
        print(json_format.MessageToJson(status, preserving_proto_field_name=True))
        return
    res, gib = status.resources, 1 << 30
    rss = res.process_rss_bytes / (1 << 20)
    free, total = res.disk_free_bytes / gib, res.disk_total_bytes / gib
    tools = f"{status.tool_count} tools" + ("" if status.mcp.configured else " (built-in)")
    by_code = ", ".join(f"{code} {n}" for code, n in sorted(status.requests_by_code.items()))
    rows = [
        ("version", status.version),
        ("uptime", str(status.uptime.ToTimedelta()).split(".")[0]),
        ("model", status.model),
        ("serving", "yes" if status.serving else "NO (shutting down)"),
        ("runs", f"{status.active_runs} active of {status.max_concurrent_runs}"),
        ("cache", f"{_dependency(status.cache)}; hit ratio {status.cache_hit_ratio:.0%}"),
        ("mcp", f"{_dependency(status.mcp)}; {tools}"),
        ("database", _dependency(status.database)),
        ("process", f"cpu {res.process_cpu_percent:.1f}%, rss {rss:.1f} MiB"),
        ("disk", f"{free:.1f} GiB free of {total:.1f} GiB"),
        ("requests", by_code or "none yet"),
        *(("model", _model(m)) for m in status.models),
    ]
    for name, value in rows:
        print(f"{name:<10} {value}")


def _model(model: agent_service_pb2.ModelStatus) -> str:
    where = f" at {model.base_url}" if model.base_url else ""
    said = [f"{model.name}{where}" + (" (default)" if model.is_default else "")]
    if model.HasField("last_success_time"):
        said.append(f"last success {model.last_success_time.ToJsonString()}")
    if model.HasField("last_failure_time"):
        said.append(f"last failure {model.last_failure_time.ToJsonString()} ({model.last_failure})")
    if model.HasField("probe"):
        said.append(_dependency(model.probe))
    return "; ".join(said)


def _dependency(dependency: agent_service_pb2.DependencyStatus) -> str:
    if not dependency.configured:
        return "not configured"
    if not dependency.reachable:
        return f"{dependency.kind} UNREACHABLE ({dependency.error})"
    latency_ms = dependency.latency.ToTimedelta().total_seconds() * 1e3
    return f"{dependency.kind} reachable ({latency_ms:.1f} ms)"


def print_result(result: agent_pb2.AgentResult, *, as_json: bool) -> None:
    """A result's content, or the whole result as protobuf JSON."""
    if as_json:
        print(json_format.MessageToJson(result, preserving_proto_field_name=True))
    else:
        print(result.content)


def print_event(message: Any, *, as_json: bool, parallel: bool = False) -> None:
    """Print one streamed event as it arrives.

    Text and step headers go to stdout; tool calls and the run's end are short notes on stderr.
    """
    if as_json:
        print(json_format.MessageToJson(message, indent=None, preserving_proto_field_name=True))
        return
    kind = message.WhichOneof("event")
    step = (
        f"step {message.step_index} "
        if isinstance(message, _STEPPED) and message.HasField("step_index")
        else ""
    )
    if kind == "text_delta" and not parallel:
        sys.stdout.write(message.text_delta.text)
        sys.stdout.flush()
    elif kind == "tool_call":
        print(
            f"[{step}tool] {message.tool_call.name}({message.tool_call.args_json})", file=sys.stderr
        )
    elif kind == "step_started":
        agent = agent_type_label(message.agent_type)
        print(f"\n── {step.strip()}: {agent} ──", flush=True)
    elif kind == "step_completed" and parallel:
        print(f"\n── {step}result ──\n{message.step_completed.result.content}")
    elif kind in ("completed", "chain_completed"):
        print(f"\n[run {message.run_id} done]", file=sys.stderr)
    elif kind == "failed":
        print(f"\n[run failed: {message.failed.message}]", file=sys.stderr)
    elif kind == "cancelled":
        reason = run_pb2.CancelReason.Name(message.cancelled.reason)
        print(f"\n[run cancelled: {reason}]", file=sys.stderr)


_STEPPED = (agent_service_pb2.ExecuteChainResponse, agent_service_pb2.WatchRunResponse)


def describe_rpc_error(exc: aio.AioRpcError) -> str:
    """The error's code and message, then one line per bad field of its BadRequest detail."""
    code = exc.code().name if isinstance(exc.code(), grpc.StatusCode) else str(exc.code())
    lines = [f"woolly-grpc: {code}: {exc.details()}"]
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]  # accepts AioRpcError
    for detail in status.details if status else []:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            lines += [f"  {v.field}: {v.description}" for v in bad_request.field_violations]
    return "\n".join(lines)
