"""The `woolly-grpc` command: `serve`, and client subcommands that print streamed text live."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

from google.protobuf import json_format
from grpc import aio
from pydantic import ValidationError

from woolly_grpc._gen.woolly.v1 import run_pb2
from woolly_grpc.client import WoollyClient
from woolly_grpc.config import Settings, describe_error

from .agents import add_agents_parser, agents_command
from .output import describe_rpc_error, print_event, print_result, print_status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    try:
        return asyncio.run(_client_command(args))
    except aio.AioRpcError as exc:
        print(describe_rpc_error(exc), file=sys.stderr)
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
    # The server's imports (pydantic-ai, SQLAlchemy) are only needed here.
    from woolly_grpc.observability import configure_logging
    from woolly_grpc.server import StartupError, serve

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
            print_status(await client.server_status(), as_json=args.json)
            return 0
        context = json.loads(args.context)
        if not isinstance(context, dict):
            raise ValueError("--context must be a JSON object")
        if args.command == "execute":
            response = await client.execute(
                args.repository, args.agent_type, args.query, context=context, timeout=args.timeout
            )
            print_result(response.result, as_json=args.json)
            print(f"[run {response.run_id}]", file=sys.stderr)
            return 0
        if args.command == "stream":
            events = client.stream(
                args.repository, args.agent_type, args.query, context=context, timeout=args.timeout
            )
            async for message in events:
                print_event(message, as_json=args.json)
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
            print_event(chain_message, as_json=args.json, parallel=args.parallel)
        return 0


async def _run_command(client: WoollyClient, args: argparse.Namespace) -> int:
    if args.action == "watch":
        async for message in client.watch_run(args.run_id, args.after):
            print_event(message, as_json=False)
        return 0
    action = {"get": client.get_run, "cancel": client.cancel_run, "retry": client.retry_run}
    run = await action[args.action](args.run_id)
    print(json_format.MessageToJson(run, preserving_proto_field_name=True))
    return 0 if run.status != run_pb2.RUN_STATUS_FAILED else 1
