"""The saved-agent operations the RPCs call: tenant-scoped, validated, then stored.

`SavedAgents` is what the servicer talks to. It validates definitions (`rules.py`), applies
update masks, scopes everything to the caller's tenant, and turns stored definitions into the
core's `SavedAgent` for runs; `database.AgentDatabase` only persists.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pydantic_ai.mcp import MCPToolset
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset

from woolly_grpc.core import FieldViolation, InvalidInput, NotFound, SavedAgent, Unavailable
from woolly_grpc.core.tools import repository_name_problem
from woolly_grpc.observability.logs import redact_urls

from .rules import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    WRITABLE_FIELDS,
    AgentFields,
    AgentPage,
    AgentRecord,
    field_violations,
    mask_fields,
    runnable,
)

if TYPE_CHECKING:
    from .database import AgentDatabase

_log = logging.getLogger(__name__)

MAX_REQUEST_ID_CHARS = 64
_UPDATE_ATTEMPTS = 5
"""Optimistic updates retried this often when another writer changed the agent meanwhile."""

ToolNames = Callable[[], Awaitable[frozenset[str] | None]]
"""The names of the tools agents may call now; None when they cannot be known in advance."""

AgentRef = tuple[str, str]
"""A saved agent named in a run request: (request field, agent id)."""


class SavedAgents:
    """Create, read, list, update and delete saved agents of the caller's tenant; resolve them.

    Every operation takes the caller's tenant; another tenant's agent is NotFound.

    Args:
        database: Where definitions live.
        tool_names: The tools that exist, to check `tools` allow-lists against.
        models: The model specs a saved agent may name (`WOOLLY_MODELS`).
    """

    def __init__(
        self, database: AgentDatabase, tool_names: ToolNames, models: Collection[str] = ()
    ) -> None:
        self.database = database
        self.tool_names = tool_names
        self.models = tuple(models)

    async def create(self, tenant: str, agent: AgentFields, request_id: str = "") -> AgentRecord:
        """Validate and store a new definition (AlreadyExists for a taken name).

        A `request_id` seen before returns the agent its first request created (AIP-155).
        """
        if len(request_id) > MAX_REQUEST_ID_CHARS or not request_id.isprintable():
            raise InvalidInput.one(
                "request_id", f"must be at most {MAX_REQUEST_ID_CHARS} printable characters"
            )
        await self._validate(agent, WRITABLE_FIELDS)
        return await self.database.insert(tenant, agent, request_id or None)

    async def get(self, tenant: str, agent_id: str) -> AgentRecord:
        """The definition with this id (NotFound for none, or one of another tenant)."""
        if not agent_id:
            raise InvalidInput.one("id", "must name a saved agent")
        return await self.database.get(tenant, agent_id)

    async def list_page(
        self, tenant: str, repository: str, page_size: int, page_token: str
    ) -> AgentPage:
        """A page of definitions, oldest first; with a repository, its own and unscoped ones."""
        violations: list[FieldViolation] = []
        if repository and (problem := repository_name_problem(repository)):
            violations.append(FieldViolation("repository", problem))
        if page_size < 0:
            violations.append(FieldViolation("page_size", "must not be negative"))
        if violations:
            raise InvalidInput(violations)
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        return await self.database.page(tenant, repository, size, page_token)

    async def update(
        self, tenant: str, agent_id: str, agent: AgentFields, paths: Sequence[str]
    ) -> AgentRecord:
        """Change the fields named by `paths` (an update mask); the revision grows by one."""
        masked = mask_fields(paths)
        if not agent_id:
            raise InvalidInput.one("agent.id", "must name the saved agent to change")
        await self._validate(agent, masked)
        for _ in range(_UPDATE_ATTEMPTS):
            current = await self.database.get(tenant, agent_id)
            changed = replace(current.fields, **{f: getattr(agent, f) for f in masked})
            updated = await self.database.replace(tenant, current, changed)
            if updated is not None:
                return updated
        raise Unavailable(f"agent {agent_id!r} is being changed by others; try again")

    async def delete(self, tenant: str, agent_id: str) -> None:
        """Delete a definition (NotFound for none)."""
        if not agent_id:
            raise InvalidInput.one("id", "must name a saved agent")
        await self.database.delete(tenant, agent_id)

    async def for_run(
        self, tenant: str, refs: Sequence[AgentRef], repository: str
    ) -> dict[str, SavedAgent]:
        """The saved agents a run request names, by id, once each is known runnable there.

        Raises:
            InvalidInput: an empty id, or an agent scoped to another repository.
            NotFound: an id with no agent (in this tenant).
            FailedPrecondition: an inactive agent.
        """
        if not refs:
            return {}
        if empty := [field for field, agent_id in refs if not agent_id]:
            raise InvalidInput([FieldViolation(f, "must name a saved agent") for f in empty])
        found = await self.database.get_many(tenant, {i for _, i in refs})
        resolved: dict[str, SavedAgent] = {}
        for field, agent_id in refs:
            record = found.get(agent_id)
            if record is None:
                raise NotFound("agent", agent_id, hint=f"no saved agent has this id ({field})")
            resolved[agent_id] = runnable(record, repository, field, self.models)
        return resolved

    async def revision_key(self, tenant: str, refs: Sequence[AgentRef]) -> bytes:
        """The named agents' ids with their current revisions, for cache keys (b"" for none)."""
        agent_ids = sorted({agent_id for _, agent_id in refs})
        if not agent_ids:
            return b""
        revisions = await self.database.revisions(tenant, agent_ids)
        # 0 stands for a missing agent: a key under which no result is ever stored.
        return ",".join(f"{i}@{revisions.get(i, 0)}" for i in agent_ids).encode()

    async def _validate(self, agent: AgentFields, names: Collection[str]) -> None:
        tool_names = await self.tool_names() if "tools" in names and agent.tools else None
        if problems := field_violations(agent, names, tool_names, self.models):
            raise InvalidInput(problems)


def toolset_names(toolset: AbstractToolset[Any]) -> ToolNames:
    """How to learn the names of a toolset's tools (MCP servers are asked each time)."""

    async def names() -> frozenset[str] | None:
        if isinstance(toolset, FunctionToolset):
            return frozenset(toolset.tools)
        if isinstance(toolset, MCPToolset):
            try:
                return frozenset(tool.name for tool in await toolset.list_tools())
            except Exception as exc:
                # Its text may quote the server's URL, token and all: the log gets it redacted.
                _log.warning("cannot list the MCP server's tools: %s", redact_urls(str(exc)))
                raise Unavailable("cannot list the MCP server's tools: it is unavailable") from exc
        return None

    return names
