"""Run agents as streams of events: one agent (AgentRunner) or a chain of them (ChainRunner)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic_ai import AgentRunResultEvent
from pydantic_ai.messages import (
    AgentStreamEvent,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
)
from pydantic_ai.models import Model, infer_model
from pydantic_ai.toolsets import AbstractToolset
from pydantic_ai.usage import UsageLimits

from .agents import build_agents, build_prompt
from .exceptions import FieldViolation, InvalidInput, WoollyError
from .failures import core_error
from .local import local_model
from .shaping import shape
from .tools import REPOSITORY_TOOLSET, RepoDeps, resolve_repository
from .types import (
    AgentResult,
    AgentType,
    Completed,
    Event,
    Limits,
    RunRequest,
    Started,
    TextDelta,
    ToolCall,
    ToolResult,
    Usage,
)

TOOL_RESULT_PREVIEW_CHARS = 500
"""How much of a tool's answer a ToolResult event carries (the model sees all of it)."""


class AgentRunner:
    """Runs one agent over one repository and yields its events.

    Args:
        model: `"local"` (the offline engine), a pydantic-ai model name, or a Model instance.
        repos_root: The directory whose subdirectories are the repositories.
        toolset: The tools agents may call; the built-in repository tools by default.
        limits: Input and per-run limits.
    """

    def __init__(
        self,
        *,
        model: str | Model = "local",
        repos_root: Path,
        toolset: AbstractToolset[RepoDeps] = REPOSITORY_TOOLSET,
        limits: Limits | None = None,
    ) -> None:
        self.repos_root = repos_root.resolve()
        self.toolset = toolset
        self.limits = limits or Limits()
        self._agents = build_agents()
        if model == "local":
            self.model_name = "local"
            self._models: Mapping[AgentType, Model] = {t: local_model(t) for t in AgentType}
        else:
            shared = infer_model(model) if isinstance(model, str) else model
            self.model_name = model if isinstance(model, str) else shared.model_name
            self._models = dict.fromkeys(AgentType, shared)

    def check(self, request: RunRequest) -> Path:
        """Validate a request; return its repository directory.

        Raises:
            InvalidInput: with one violation per bad field.
            NotFound: when the repository does not exist.
        """
        violations = _query_violations(request.query, self.limits)
        violations += _context_violations(request.context, self.limits)
        if violations:
            raise InvalidInput(violations)
        return resolve_repository(self.repos_root, request.repository)

    async def stream(self, request: RunRequest) -> AsyncIterator[Event]:
        """Yield Started, then text and tool events as they happen, then Completed."""
        deps = RepoDeps(request.repository, self.check(request))
        agent_type = request.agent_type
        yield Started(model=self.model_name, agent_type=agent_type)
        began = time.perf_counter()
        transcript = _Transcript(agent_type)
        saved = request.saved_agent
        toolset = self.toolset
        if saved is not None and saved.tools:
            allowed = frozenset(saved.tools)
            toolset = toolset.filtered(lambda _ctx, tool: tool.name in allowed)
        try:
            async with self._agents[agent_type].run_stream_events(
                build_prompt(request),
                deps=deps,
                model=self._models[agent_type],
                toolsets=[toolset],
                instructions=saved.system_prompt if saved and saved.system_prompt else None,
                usage_limits=UsageLimits(
                    request_limit=self.limits.max_model_requests,
                    tool_calls_limit=self.limits.max_tool_calls,
                ),
            ) as events:
                async for raw in events:
                    if (event := transcript.translate(raw)) is not None:
                        yield event
        except WoollyError:
            raise
        except Exception as exc:
            raise core_error(exc, self.limits) from exc
        yield Completed(
            transcript.result(
                model=self.model_name,
                duration_s=time.perf_counter() - began,
                agent_id=saved.id if saved else "",
            ),
            agent_type=agent_type,
        )


def _query_violations(query: str, limits: Limits) -> list[FieldViolation]:
    if not query.strip():
        return [FieldViolation("user_query", "must not be empty")]
    if len(query) > limits.max_query_chars:
        return [
            FieldViolation(
                "user_query",
                f"is {len(query):,} characters; the limit is {limits.max_query_chars:,}",
            )
        ]
    return []


def _context_violations(context: Mapping[str, Any], limits: Limits) -> list[FieldViolation]:
    size = len(json.dumps(context, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limits.max_context_bytes:
        return [
            FieldViolation(
                "context", f"is {size:,} bytes as JSON; the limit is {limits.max_context_bytes:,}"
            )
        ]
    return []


@dataclass
class _Transcript:
    """What one agent run said and did, gathered from pydantic-ai's events."""

    agent_type: AgentType
    text: list[str] = field(default_factory=list)
    calls: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)

    def translate(self, raw: AgentStreamEvent | AgentRunResultEvent[Any]) -> Event | None:
        """Record one pydantic-ai event and return the core event it becomes, if any."""
        tag = self.agent_type
        if isinstance(raw, PartStartEvent) and isinstance(raw.part, TextPart) and raw.part.content:
            return self._text(raw.part.content)
        if isinstance(raw, PartDeltaEvent) and isinstance(raw.delta, TextPartDelta):
            return self._text(raw.delta.content_delta) if raw.delta.content_delta else None
        if isinstance(raw, FunctionToolCallEvent):
            self.calls.append((raw.part.tool_name, raw.part.args_as_dict()))
            return ToolCall(
                raw.part.tool_call_id,
                raw.part.tool_name,
                raw.part.args_as_json_str(),
                agent_type=tag,
            )
        if isinstance(raw, FunctionToolResultEvent):
            content = raw.part.model_response_str()
            return ToolResult(
                raw.part.tool_call_id,
                raw.part.tool_name,
                content[:TOOL_RESULT_PREVIEW_CHARS],
                truncated=len(content) > TOOL_RESULT_PREVIEW_CHARS,
                agent_type=tag,
            )
        if isinstance(raw, AgentRunResultEvent):
            u = raw.result.usage
            self.usage = Usage(u.input_tokens, u.output_tokens, u.requests, u.tool_calls)
        return None

    def _text(self, text: str) -> TextDelta:
        self.text.append(text)
        return TextDelta(text, agent_type=self.agent_type)

    def result(self, *, model: str, duration_s: float, agent_id: str) -> AgentResult:
        """The AgentResult; its content is exactly the streamed text."""
        content = "".join(self.text)
        shaped = shape(self.agent_type, content, self.calls)
        return AgentResult(
            agent_type=self.agent_type,
            content=content,
            metadata=shaped.metadata,
            confidence=shaped.confidence,
            sources=shaped.sources,
            suggestions=shaped.suggestions,
            test_files=shaped.test_files,
            next_actions=shaped.next_actions,
            condensed_summary=shaped.condensed_summary,
            usage=self.usage,
            model=model,
            duration_s=duration_s,
            agent_id=agent_id,
        )
