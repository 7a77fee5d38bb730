"""The `woolly-grpc` command: `serve`, and client subcommands that print streamed text live."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import sys
from collections.abc import Sequence

from google.protobuf import json_format
from grpc import aio
from pydantic import ValidationError

from woolly_grpc._gen.woolly.v1 import run_pb2
from woolly_grpc.api import AGENT_TYPE_LABELS
from woolly_grpc.client import RunOptionsArgs, SavedAgent, WoollyClient
from woolly_grpc.config import Settings, StartupError, describe_error

from .agents import add_agents_parser, agents_command
from .output import describe_rpc_error, print_event, print_result, print_status

_AGENT_ID = re.compile(r"[0-9a-f]{32}")


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
    except BrokenPipeError:
        # `| head` closed stdout: stop quietly as other tools do (and point stdout at devnull,
        # or Python's final flush of it would complain once more).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ValueError, OSError) as exc:  # incl. JSONDecodeError, an unreadable --tls-ca
        print(f"woolly-grpc: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="woolly-grpc", description="Woolly's code-analysis agents over gRPC."
    )
    _add_connection_options(parser, with_defaults=True)
    # The same options after the command (`woolly-grpc stream … --target host:port`) override
    # those before it; not given there, they leave them be.
    after = argparse.ArgumentParser(add_help=False)
    _add_connection_options(after, with_defaults=False)
    commands = parser.add_subparsers(dest="command", required=True)
    add = functools.partial(commands.add_parser, parents=[after])

    serve = commands.add_parser("serve", help="run the server (flags override WOOLLY_* settings)")
    for name, info in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        serve.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=info.description)

    add("types", help="list the built-in agent types")
    add_agents_parser(add, [after])
    status = add("status", help="show the server's status and its dependencies'")
    status.add_argument("--json", action="store_true", help="print protobuf JSON, not text")
    status.add_argument("--probe", action="store_true", help="also ask each model's provider")
    for name, text in (
        ("execute", "run one agent, print its result"),
        ("stream", "stream one agent"),
    ):
        sub = add(name, help=text)
        sub.add_argument("repository")
        sub.add_argument("agent", help="a type (summarizer, chat_assistant, …) or a saved agent id")
        sub.add_argument("query")
        _add_call_options(sub)
    chain = add("chain", help="run several agents, streaming every step")
    chain.add_argument("repository")
    chain.add_argument("agents", help="comma-separated types or saved agent ids")
    chain.add_argument("query")
    chain.add_argument("--parallel", action="store_true", help="run the steps at once")
    _add_call_options(chain)

    run = add("run", help="inspect or control a run")
    run.add_argument("action", choices=["get", "watch", "cancel", "retry"])
    run.add_argument("run_id")
    run.add_argument("--after", type=int, default=0, help="watch: replay events after this one")
    return parser


def _add_connection_options(parser: argparse.ArgumentParser, *, with_defaults: bool) -> None:
    def default(value: object) -> object:
        return value if with_defaults else argparse.SUPPRESS

    parser.add_argument(
        "--target",
        default=default("localhost:50051"),
        help="server address (default localhost:50051)",
    )
    parser.add_argument(
        "--api-key",
        default=default(os.environ.get("WOOLLY_API_KEY")),
        help="sent as `authorization: Bearer <key>` (default $WOOLLY_API_KEY, which, unlike "
        "the flag, other users cannot see in the process list)",
    )
    # The client's TLS options get dests of their own: `serve` reads every dest named like a
    # setting (`tls_cert`…), and a client default must never override the server's environment.
    parser.add_argument(
        "--tls",
        dest="client_tls",
        action="store_true",
        default=default(False),
        help="use TLS with the system's CAs",
    )
    for flag, text in (
        ("--tls-ca", "use TLS; PEM CA bundle that signed the server"),
        ("--tls-cert", "PEM client certificate (mutual TLS)"),
        ("--tls-key", "PEM private key of --tls-cert"),
    ):
        dest = "client_" + flag.removeprefix("--").replace("-", "_")
        parser.add_argument(flag, dest=dest, default=default(None), help=text)


def _add_call_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--context", default="{}", help="a JSON object of extra facts")
    parser.add_argument("--json", action="store_true", help="print protobuf JSON, not text")
    parser.add_argument("--timeout", type=float, default=None, help="deadline in seconds")
    parser.add_argument(
        "--cache",
        choices=["bypass", "refresh", "only-if-cached"],
        help="how to use the result cache (default: read and write it)",
    )
    parser.add_argument(
        "--detach", action="store_true", help="the run goes on if this command stops"
    )


def _serve(args: argparse.Namespace) -> int:
    from woolly_grpc.observability.logs import configure_logging

    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        print(f"woolly-grpc: {describe_error(exc)}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        if settings.workers > 1:
            from woolly_grpc.workers import supervise

            return supervise(settings)
        # The server's imports (pydantic-ai, SQLAlchemy) are only needed here.
        from woolly_grpc.server import serve

        asyncio.run(serve(settings))
    except StartupError as exc:
        print(f"woolly-grpc: {exc}", file=sys.stderr)
        return 2
    return 0


async def _client_command(args: argparse.Namespace) -> int:
    connection = {
        "api_key": args.api_key,
        "tls": args.client_tls,
        "tls_ca": args.client_tls_ca,
        "tls_cert": args.client_tls_cert,
        "tls_key": args.client_tls_key,
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
            status = await client.server_status(probe_models=args.probe)
            print_status(status, as_json=args.json)
            return 0
        return await _agent_command(client, args)


async def _agent_command(client: WoollyClient, args: argparse.Namespace) -> int:
    """`execute`, `stream` or `chain`; a failed run raises its status (exit 1)."""
    context = json.loads(args.context)
    if not isinstance(context, dict):
        raise ValueError("--context must be a JSON object")
    options = RunOptionsArgs(detach=args.detach)
    if args.cache:
        options["cache_policy"] = args.cache.replace("-", "_")
    if args.command == "chain":
        steps = [_step(name) for name in args.agents.split(",")]
        events = client.chain(
            args.repository,
            steps,
            args.query,
            context=context,
            parallel=args.parallel,
            timeout=args.timeout,
            **options,
        )
    else:
        step = _step(args.agent)
        agent_id = step.id if isinstance(step, SavedAgent) else None
        agent_type = None if isinstance(step, SavedAgent) else step
        if args.command == "execute":
            response = await client.execute(
                args.repository,
                agent_type,
                args.query,
                agent_id=agent_id,
                context=context,
                timeout=args.timeout,
                **options,
            )
            print_result(response.result, as_json=args.json)
            print(f"[run {response.run_id}]", file=sys.stderr)
            return 0
        events = client.stream(
            args.repository,
            agent_type,
            args.query,
            agent_id=agent_id,
            context=context,
            timeout=args.timeout,
            **options,
        )
    async for message in events:
        print_event(message, as_json=args.json, parallel=getattr(args, "parallel", False))
    return 0


def _step(given: str) -> str | SavedAgent:
    """A built-in type's name, or a saved agent's id (32 hex digits)."""
    name = given.strip()
    if name.lower().removeprefix("agent_type_") in AGENT_TYPE_LABELS:
        return name
    if _AGENT_ID.fullmatch(name):
        return SavedAgent(name)
    types = ", ".join(AGENT_TYPE_LABELS)
    raise ValueError(f"{given!r} is neither an agent type ({types}) nor a saved agent's id")


async def _run_command(client: WoollyClient, args: argparse.Namespace) -> int:
    if args.action == "watch":  # a failed or cancelled run raises its status (exit 1)
        async for message in client.watch_run(args.run_id, args.after):
            print_event(message, as_json=False)
        return 0
    action = {"get": client.get_run, "cancel": client.cancel_run, "retry": client.retry_run}
    run = await action[args.action](args.run_id)
    print(json_format.MessageToJson(run, preserving_proto_field_name=True))
    return 0 if run.status != run_pb2.RUN_STATUS_FAILED else 1
