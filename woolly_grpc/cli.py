"""The `woolly-grpc` command: `serve`, and client subcommands that print streamed text live."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc import aio
from grpc_status import rpc_status
from pydantic import ValidationError

from ._cli_agents import add_agents_parser, agents_command
from ._gen.woolly.v1 import agent_pb2, agent_service_pb2, run_pb2
from .client import WoollyClient
from .config import Settings, describe_error


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    try:
        return asyncio.run(_client_command(args))
    except aio.AioRpcError as exc:
        print(_describe_rpc_error(exc), file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:  # incl. JSONDecodeError, an unreadable --tls-ca
        print(f"woolly-grpc: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="woolly-grpc", description="Woolly's code-analysis agents over gRPC."
    )
    parser.add_argument(
        "--target", default="localhost:50051", help="server address (default %(default)s)"
    )
    _add_connection_options(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server (flags override WOOLLY_* settings)")
    for name, info in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        serve.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=info.description)

    commands.add_parser("types", help="list the built-in agent types")
    add_agents_parser(commands)
    status = commands.add_parser("status", help="show the server's status and its dependencies'")
    status.add_argument("--json", action="store_true", help="print protobuf JSON, not text")
    for name, text in (
        ("execute", "run one agent, print its result"),
        ("stream", "stream one agent"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("repository")
        sub.add_argument("agent_type", help="e.g. summarizer, chat_assistant")
        sub.add_argument("query")
        _add_call_options(sub)
    chain = commands.add_parser("chain", help="run several agents, streaming every step")
    chain.add_argument("repository")
    chain.add_argument("agent_types", help="comma-separated, e.g. summarizer,tester")
    chain.add_argument("query")
    chain.add_argument("--parallel", action="store_true", help="run the steps at once")
    _add_call_options(chain)

    run = commands.add_parser("run", help="inspect or control a run")
    run.add_argument("action", choices=["get", "watch", "cancel", "retry"])
    run.add_argument("run_id")
    run.add_argument("--after", type=int, default=0, help="watch: replay events after this one")
    return parser


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-key",
        default=os.environ.get("WOOLLY_API_KEY"),
        help="sent as `authorization: Bearer <key>` (default $WOOLLY_API_KEY, which, unlike "
        "the flag, other users cannot see in the process list)",
    )
    parser.add_argument("--tls", action="store_true", help="use TLS with the system's CAs")
    parser.add_argument("--tls-ca", help="use TLS; PEM CA bundle that signed the server")
    parser.add_argument("--tls-cert", help="PEM client certificate (mutual TLS)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")


def _add_call_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--context", default="{}", help="a JSON object of extra facts")
    parser.add_argument("--json", action="store_true", help="print protobuf JSON, not text")
    parser.add_argument("--timeout", type=float, default=None, help="deadline in seconds")


def _serve(args: argparse.Namespace) -> int:
    from .observability import configure_logging  # the server's imports are only needed here
    from .server import StartupError, serve

    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        print(f"woolly-grpc: {describe_error(exc)}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        print(f"woolly-grpc: {exc}", file=sys.stderr)
        return 2
    return 0


async def _client_command(args: argparse.Namespace) -> int:
    connection = {
        "api_key": args.api_key,
        "tls": args.tls,
        "tls_ca": args.tls_ca,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
    }
    async with WoollyClient(args.target, **connection) as client:
        if args.command == "types":
            for info in await client.agent_types():
                print(f"{info.name:<16} {info.description}")
            return 0
        if args.command == "run":
            return await _run_command(client, args)
        if args.command == "agents":
            return await agents_command(client, args)
        if args.command == "status":
            _print_status(await client.server_status(), as_json=args.json)
            return 0
        context = json.loads(args.context)
        if not isinstance(context, dict):
            raise ValueError("--context must be a JSON object")
        if args.command == "execute":
            response = await client.execute(
                args.repository, args.agent_type, args.query, context=context, timeout=args.timeout
            )
            _print_result(response.result, as_json=args.json)
            print(f"[run {response.run_id}]", file=sys.stderr)
            return 0
        if args.command == "stream":
            events = client.stream(
                args.repository, args.agent_type, args.query, context=context, timeout=args.timeout
            )
            async for message in events:
                _print_event(message, as_json=args.json)
            return 0
        chain = client.chain(
            args.repository,
            args.agent_types.split(","),
            args.query,
            context=context,
            parallel=args.parallel,
            timeout=args.timeout,
        )
        async for chain_message in chain:
            _print_event(chain_message, as_json=args.json, parallel=args.parallel)
        return 0


async def _run_command(client: WoollyClient, args: argparse.Namespace) -> int:
    if args.action == "watch":
        async for message in client.watch_run(args.run_id, args.after):
            _print_event(message, as_json=False)
        return 0
    action = {"get": client.get_run, "cancel": client.cancel_run, "retry": client.retry_run}
    run = await action[args.action](args.run_id)
    print(json_format.MessageToJson(run, preserving_proto_field_name=True))
    return 0 if run.status != run_pb2.RUN_STATUS_FAILED else 1


def _print_status(status: agent_service_pb2.GetServerStatusResponse, *, as_json: bool) -> None:
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
    ]
    for name, value in rows:
        print(f"{name:<10} {value}")


def _dependency(dependency: agent_service_pb2.DependencyStatus) -> str:
    if not dependency.configured:
        return "not configured"
    if not dependency.reachable:
        return f"{dependency.kind} UNREACHABLE ({dependency.error})"
    latency_ms = dependency.latency.ToTimedelta().total_seconds() * 1e3
    return f"{dependency.kind} reachable ({latency_ms:.1f} ms)"


def _print_result(result: agent_pb2.AgentResult, *, as_json: bool) -> None:
    if as_json:
        print(json_format.MessageToJson(result, preserving_proto_field_name=True))
    else:
        print(result.content)


def _print_event(message: Any, *, as_json: bool, parallel: bool = False) -> None:
    """Print one streamed event: text as it arrives, tools and steps as short notes on stderr."""
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
        agent = agent_pb2.AgentType.Name(message.agent_type).removeprefix("AGENT_TYPE_").lower()
        print(f"\n── {step}: {agent} ──", file=sys.stderr)
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


def _describe_rpc_error(exc: aio.AioRpcError) -> str:
    code = exc.code().name if isinstance(exc.code(), grpc.StatusCode) else str(exc.code())
    lines = [f"woolly-grpc: {code}: {exc.details()}"]
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]  # accepts AioRpcError
    for detail in status.details if status else []:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            lines += [f"  {v.field}: {v.description}" for v in bad_request.field_violations]
    return "\n".join(lines)
