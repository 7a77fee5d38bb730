"""Saved agents' fields, stored records, and the rules they obey (no I/O here).

`operations.SavedAgents` applies these rules for the RPCs; `database.AgentDatabase` persists
the records.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from datetime import datetime

from woolly_grpc.core import AgentType, FailedPrecondition, FieldViolation, InvalidInput, SavedAgent
from woolly_grpc.core.tools import repository_name_problem

MAX_NAME_CHARS = 100
MAX_DESCRIPTION_CHARS = 2_000
MAX_SYSTEM_PROMPT_CHARS = 20_000
MAX_TOOLS = 100
MAX_TEMPERATURE = 2.0
MAX_OUTPUT_TOKENS = 1_000_000
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class AgentFields:
    """The writable fields of a saved agent, as a caller gives them."""

    name: str
    """Unique within the repository scope (and tenant)."""
    base_type: AgentType | None
    """The built-in agent it builds on; None when the caller left it unspecified (invalid)."""
    description: str = ""
    system_prompt: str = ""
    """Added to the base type's instructions."""
    tools: tuple[str, ...] = ()
    """Tool names the agent may call; empty means all."""
    repository: str = ""
    """The only repository it may run on; empty means any."""
    is_active: bool = True
    """An inactive agent cannot be executed."""
    model: str = ""
    """The model spec it runs on (one of the server's); empty means the server's model."""
    temperature: float | None = None
    """Sampling temperature; None means the model's default."""
    max_output_tokens: int | None = None
    """Most tokens one answer may have; None means the model's default."""


WRITABLE_FIELDS = tuple(f.name for f in fields(AgentFields))
"""The update mask paths UpdateAgent accepts; an empty mask (or `*`) means all of them."""
OUTPUT_ONLY_FIELDS = ("id", "create_time", "update_time", "revision")


@dataclass(frozen=True)
class AgentRecord:
    """A stored saved agent."""

    id: str
    fields: AgentFields
    create_time: datetime
    update_time: datetime
    revision: int
    """1 when created, one more on every update."""

    def saved_agent(self) -> SavedAgent:
        """The parts of the definition that change how the core runs it."""
        base_type = self.fields.base_type
        assert base_type is not None, "stored agents always have a base type"
        return SavedAgent(
            id=self.id,
            name=self.fields.name,
            base_type=base_type,
            system_prompt=self.fields.system_prompt,
            tools=self.fields.tools,
            revision=self.revision,
            model=self.fields.model,
            temperature=self.fields.temperature,
            max_output_tokens=self.fields.max_output_tokens,
        )


@dataclass(frozen=True)
class AgentPage:
    """One page of ListAgents."""

    agents: tuple[AgentRecord, ...]
    next_page_token: str
    """Empty on the last page."""


def runnable(
    record: AgentRecord, repository: str, field: str, models: Collection[str]
) -> SavedAgent:
    """The core's SavedAgent of a stored one, if it may run on `repository` now.

    A scope mismatch is INVALID_ARGUMENT (the request pairs an agent with a repository it is not
    for, whatever the server's state); an inactive agent, or one naming a model this server no
    longer serves, is FAILED_PRECONDITION (it can run again once someone fixes it).
    """
    scope = record.fields.repository
    if scope and scope != repository:
        raise InvalidInput.one(
            field,
            f"saved agent {record.id!r} ({record.fields.name}) belongs to repository {scope!r}, "
            f"not {repository!r}",
        )
    if not record.fields.is_active:
        raise FailedPrecondition(
            f"saved agent {record.id!r} ({record.fields.name}) is inactive; set is_active to run it"
        )
    if record.fields.model and record.fields.model not in models:
        raise FailedPrecondition(
            f"saved agent {record.id!r} ({record.fields.name}) runs on {record.fields.model!r}, "
            "which this server no longer serves (WOOLLY_MODELS); update its model"
        )
    return record.saved_agent()


def mask_fields(paths: Sequence[str]) -> tuple[str, ...]:
    """The writable fields an update mask names (all of them for an empty mask or `*`)."""
    if not paths or list(paths) == ["*"]:
        return WRITABLE_FIELDS
    problems = []
    for path in paths:
        if path in OUTPUT_ONLY_FIELDS:
            problems.append(f"{path!r} is output only")
        elif path not in WRITABLE_FIELDS:
            problems.append(f"unknown field {path!r}")
    if problems:
        choices = ", ".join(WRITABLE_FIELDS)
        raise InvalidInput.one("update_mask", f"{'; '.join(problems)} (writable: {choices})")
    return tuple(dict.fromkeys(paths))


def field_violations(
    agent: AgentFields,
    names: Collection[str],
    tool_names: frozenset[str] | None,
    models: Collection[str],
) -> list[FieldViolation]:
    """What is wrong with the fields `names` of a definition (paths under `agent.`).

    Args:
        agent: The definition.
        names: The fields to check (all, or an update mask's).
        tool_names: The tools that exist; None when they cannot be known.
        models: The model specs saved agents may name.
    """
    problems: dict[str, str | None] = {
        "name": _text_problem(agent.name, MAX_NAME_CHARS, required=True),
        "description": _length_problem(agent.description, MAX_DESCRIPTION_CHARS),
        "system_prompt": _length_problem(agent.system_prompt, MAX_SYSTEM_PROMPT_CHARS),
        "base_type": (
            "must be specified (one of the AGENT_TYPE_* values)"
            if agent.base_type is None
            else None
        ),
        "tools": _tools_problem(agent.tools, tool_names),
        "repository": agent.repository and repository_name_problem(agent.repository),
        "model": _model_problem(agent.model, models),
        "temperature": _range_problem(agent.temperature, 0.0, MAX_TEMPERATURE),
        "max_output_tokens": _range_problem(agent.max_output_tokens, 1, MAX_OUTPUT_TOKENS),
    }
    return [
        FieldViolation(f"agent.{name}", problem)
        for name, problem in problems.items()
        if problem and name in names
    ]


def _model_problem(model: str, models: Collection[str]) -> str | None:
    if not model or model in models:
        return None
    return f"{model!r} is not a model this server serves; use one of {', '.join(models)}"


def _range_problem(value: float | None, low: float, high: float) -> str | None:
    if value is None or (low <= value <= high and value == value):  # NaN fails the comparison
        return None
    return f"must be between {low:g} and {high:,g} (got {value:g})"


def _length_problem(text: str, limit: int) -> str | None:
    return f"is {len(text):,} characters; the limit is {limit:,}" if len(text) > limit else None


def _text_problem(text: str, limit: int, *, required: bool) -> str | None:
    if required and not text.strip():
        return "must not be empty"
    if text != text.strip():
        return "must not start or end with whitespace"
    if any(unicodedata.category(c).startswith("C") for c in text):
        return "must not contain control characters"
    return _length_problem(text, limit)


def _tools_problem(tools: Sequence[str], known: frozenset[str] | None) -> str | None:
    if len(tools) > MAX_TOOLS:
        return f"lists {len(tools)} tools; the limit is {MAX_TOOLS}"
    if repeated := sorted({t for t in tools if tools.count(t) > 1}):
        return f"lists {', '.join(map(repr, repeated))} more than once"
    if known is not None and (unknown := [t for t in tools if t not in known]):
        return (
            f"names unknown tools {', '.join(map(repr, unknown))}; "
            f"the tools are {', '.join(sorted(known))}"
        )
    return None
