"""The core's inputs, events and results: frozen dataclasses with no transport in them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias

JsonObject: TypeAlias = Mapping[str, Any]
"""A JSON object as plain Python values (what `google.protobuf.Struct` converts to)."""


class AgentType(StrEnum):
    """The built-in agents."""

    SIMPLIFIER = "simplifier"
    TESTER = "tester"
    CONVO_STARTER = "convo_starter"
    SUMMARIZER = "summarizer"
    DOCUMENTATION = "documentation"
    CHAT_ASSISTANT = "chat_assistant"


class ChainMode(StrEnum):
    """How a chain runs its steps."""

    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"


@dataclass(frozen=True)
class SavedAgent:
    """The parts of a saved agent definition that change how it runs."""

    id: str
    name: str
    base_type: AgentType
    system_prompt: str = ""
    """Appended to the base type's instructions."""
    tools: tuple[str, ...] = ()
    """Tool names the agent may call; empty means all."""
    revision: int = 1
    """Grows on every edit, so results of an older definition are never reused."""
    model: str = ""
    """The model spec it runs on; empty means the server's model."""
    temperature: float | None = None
    max_output_tokens: int | None = None


@dataclass(frozen=True)
class RunRequest:
    """One agent over one repository."""

    repository: str
    """A directory name under the repositories root."""
    agent_type: AgentType
    """For a saved agent: its base type."""
    query: str
    context: JsonObject = field(default_factory=dict)
    saved_agent: SavedAgent | None = None
    earlier_results: tuple[AgentResult, ...] = ()
    """Results of earlier chain steps this agent should build on."""

    @property
    def callers_context(self) -> JsonObject:
        """The context without what a chain added from its earlier steps.

        A chain step's context also holds `agent_<i>_result` and `agent_<i>_type` of the steps
        before it; those are the chain's own, not the caller's (limits and the prompt say so).
        """
        if not self.earlier_results:
            return self.context
        added = {
            f"agent_{i}_{what}"
            for i in range(len(self.earlier_results))
            for what in ("result", "type")
        }
        return {k: v for k, v in self.context.items() if k not in added}


@dataclass(frozen=True)
class Limits:
    """Input and per-run limits."""

    max_query_chars: int = 100_000
    max_context_bytes: int = 256 * 1024
    """Size of the request context as compact JSON."""
    max_chain_steps: int = 10
    max_model_requests: int = 50
    """Model requests one agent run may make."""
    max_tool_calls: int = 200
    """Tool calls one agent run may make."""


@dataclass(frozen=True)
class ChainStep:
    """One agent of a chain."""

    agent_type: AgentType
    saved_agent: SavedAgent | None = None


@dataclass(frozen=True)
class ChainRequest:
    """Several agents over one repository, in order or at once."""

    repository: str
    steps: tuple[ChainStep, ...]
    query: str
    context: JsonObject = field(default_factory=dict)
    mode: ChainMode = ChainMode.SEQUENTIAL


@dataclass(frozen=True)
class Usage:
    """Model usage, summable."""

    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    tool_calls: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.requests + other.requests,
            self.tool_calls + other.tool_calls,
        )


class UsageMeter:
    """What a run's agents used, whatever way each ended (succeeded, failed or was cancelled)."""

    def __init__(self) -> None:
        self.by_agent: dict[AgentType, Usage] = {}
        """Usage per agent type (a chain's steps of one type add up)."""

    def add(self, agent_type: AgentType, usage: Usage) -> None:
        """Count one agent run's usage."""
        self.by_agent[agent_type] = self.by_agent.get(agent_type, Usage()) + usage

    @property
    def total(self) -> Usage:
        """Everything used so far."""
        return sum(self.by_agent.values(), Usage())


@dataclass(frozen=True)
class Suggestion:
    """One row of the simplifier's suggestions table."""

    location: str
    """`path:line`."""
    symbol: str
    issue: str
    suggestion: str
    score: float = 0.0
    """Higher is more worth doing first."""


@dataclass(frozen=True)
class ProposedFile:
    """A file an agent proposes (never written to the repository)."""

    path: str
    content: str


@dataclass(frozen=True)
class AgentResult:
    """The result of one agent, the same shape for every type."""

    agent_type: AgentType
    content: str
    """Markdown; equal to the concatenation of the run's text deltas."""
    metadata: JsonObject = field(default_factory=dict)
    confidence: float = 0.0
    """0..1: how well the answer is supported by what the tools returned."""
    sources: tuple[str, ...] = ()
    suggestions: tuple[Suggestion, ...] = ()
    test_files: tuple[ProposedFile, ...] = ()
    next_actions: tuple[str, ...] = ()
    condensed_summary: str | None = None
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    duration_s: float = 0.0
    agent_id: str = ""
    """Set when a saved agent produced it."""
    cached: bool = False
    """True when the result was replayed from a cache rather than produced now."""


@dataclass(frozen=True, kw_only=True)
class _Tagged:
    step: int | None = None
    """The 0-based chain step of the event; None outside chains and for chain-level events."""
    agent_type: AgentType | None = None
    """The agent (or the step's agent) that produced the event."""


@dataclass(frozen=True)
class Started(_Tagged):
    """The run began."""

    model: str
    step_count: int = 1


@dataclass(frozen=True)
class TextDelta(_Tagged):
    """More answer text."""

    text: str


@dataclass(frozen=True)
class ToolCall(_Tagged):
    """The model called a tool."""

    call_id: str
    name: str
    args_json: str


@dataclass(frozen=True)
class ToolResult(_Tagged):
    """A tool answered; `content` is shortened for the stream."""

    call_id: str
    name: str
    content: str
    truncated: bool = False


@dataclass(frozen=True)
class Completed(_Tagged):
    """A single-agent run finished."""

    result: AgentResult


@dataclass(frozen=True)
class StepStarted(_Tagged):
    """A chain step began."""

    agent_id: str = ""


@dataclass(frozen=True)
class StepCompleted(_Tagged):
    """A chain step finished."""

    result: AgentResult


@dataclass(frozen=True)
class ChainCompleted(_Tagged):
    """A chain finished."""

    results: tuple[AgentResult, ...]
    final_context: JsonObject


Event: TypeAlias = (
    Started
    | TextDelta
    | ToolCall
    | ToolResult
    | Completed
    | StepStarted
    | StepCompleted
    | ChainCompleted
)
"""Everything a runner yields, in the order it happened."""
