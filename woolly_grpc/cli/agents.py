"""`woolly-grpc agents create|get|list|update|delete`: saved agents from the command line."""

from __future__ import annotations

import argparse
from typing import Any

from google.protobuf import json_format

from woolly_grpc._gen.woolly.v1 import agent_pb2
from woolly_grpc.api import agent_type_label
from woolly_grpc.client import WoollyClient


def add_agents_parser(add_command: Any, common: list[argparse.ArgumentParser]) -> None:
    """Add the `agents` command and its actions (each taking the `common` options too)."""
    agents = add_command("agents", help="manage saved agents")
    actions = agents.add_subparsers(dest="action", required=True)

    create = actions.add_parser("create", parents=common, help="save a new agent")
    create.add_argument("name")
    create.add_argument("base_type", help="the built-in type it builds on, e.g. summarizer")
    _add_fields(create)
    create.add_argument("--inactive", action="store_true", help="save it switched off")

    update = actions.add_parser(
        "update", parents=common, help="change the fields given, and only those"
    )
    update.add_argument("id")
    update.add_argument("--name")
    update.add_argument("--base-type")
    _add_fields(update)
    state = update.add_mutually_exclusive_group()
    state.add_argument("--active", dest="active", action="store_true", default=None)
    state.add_argument("--inactive", dest="active", action="store_false")

    get = actions.add_parser("get", parents=common, help="show one saved agent")
    get.add_argument("id")
    listing = actions.add_parser("list", parents=common, help="list saved agents, oldest first")
    listing.add_argument("--repository", default="", help="its agents and unscoped ones")
    listing.add_argument("--page-size", type=int, default=0, help="agents fetched per call")
    delete = actions.add_parser("delete", parents=common, help="delete a saved agent")
    delete.add_argument("id")
    for action in (create, update, get, listing):
        action.add_argument("--json", action="store_true", help="print protobuf JSON, not text")


def _add_fields(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--description")
    parser.add_argument("--system-prompt", help="added to the base type's instructions")
    parser.add_argument("--tools", help="comma-separated allow-list; empty means all tools")
    parser.add_argument("--repository", help="the only repository it runs on; empty means any")
    parser.add_argument("--model", help="one of the server's models; empty means its own")
    parser.add_argument("--temperature", type=float, help="sampling temperature, 0 to 2")
    parser.add_argument("--max-output-tokens", type=int, help="most tokens in one answer")


async def agents_command(client: WoollyClient, args: argparse.Namespace) -> int:
    """Run one `agents` action; returns the exit code."""
    if args.action == "list":
        async for agent in client.list_agents(args.repository, page_size=args.page_size):
            print(_json(agent, indent=None) if args.json else _line(agent))
        return 0
    if args.action == "delete":
        await client.delete_agent(args.id)
        print(f"deleted {args.id}")
        return 0
    if args.action == "get":
        agent = await client.get_agent(args.id)
    elif args.action == "create":
        agent = await client.create_agent(
            args.name,
            args.base_type,
            description=args.description or "",
            system_prompt=args.system_prompt or "",
            tools=_tools(args.tools) or (),
            repository=args.repository or "",
            active=not args.inactive,
            model=args.model or "",
            temperature=args.temperature,
            max_output_tokens=args.max_output_tokens,
        )
    else:
        agent = await client.update_agent(
            args.id,
            name=args.name,
            base_type=args.base_type,
            description=args.description,
            system_prompt=args.system_prompt,
            tools=_tools(args.tools),
            repository=args.repository,
            active=args.active,
            model=args.model,
            temperature=args.temperature,
            max_output_tokens=args.max_output_tokens,
        )
    print(_json(agent) if args.json else _card(agent))
    return 0


def _tools(given: str | None) -> list[str] | None:
    if given is None:
        return None
    return [name.strip() for name in given.split(",") if name.strip()]


def _json(agent: agent_pb2.AgentDefinition, indent: int | None = 2) -> str:
    return json_format.MessageToJson(agent, indent=indent, preserving_proto_field_name=True)


def _line(agent: agent_pb2.AgentDefinition) -> str:
    state = "active" if agent.is_active else "inactive"
    scope = agent.repository or "*"
    kind = agent_type_label(agent.base_type)
    return f"{agent.id}  {agent.name:<24} {kind:<15} {scope:<16} {state:<8} r{agent.revision}"


def _model(agent: agent_pb2.AgentDefinition) -> str:
    tuning = []
    if agent.HasField("temperature"):
        tuning.append(f"temperature {agent.temperature:g}")
    if agent.HasField("max_output_tokens"):
        tuning.append(f"at most {agent.max_output_tokens:,} tokens")
    name = agent.model or "(the server's)"
    return f"{name} ({', '.join(tuning)})" if tuning else name


def _card(agent: agent_pb2.AgentDefinition) -> str:
    rows = [
        ("id", agent.id),
        ("name", agent.name),
        ("base type", agent_type_label(agent.base_type)),
        ("repository", agent.repository or "(any)"),
        ("tools", ", ".join(agent.tools) or "(all)"),
        ("model", _model(agent)),
        ("active", "yes" if agent.is_active else "no"),
        ("revision", str(agent.revision)),
        ("created", agent.create_time.ToJsonString()),
        ("updated", agent.update_time.ToJsonString()),
        ("description", agent.description),
    ]
    card = "\n".join(f"{label:<12} {value}" for label, value in rows)
    return f"{card}\nsystem prompt:\n{agent.system_prompt}" if agent.system_prompt else card
