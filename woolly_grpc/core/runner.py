"""Run agents as streams of events: one agent (AgentRunner) or a chain of them (ChainRunner)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic_ai import Agent, capture_run_messages
from pydantic_ai.exceptions import RunCancelled
from pydantic_ai.messages import (
    AgentStreamEvent,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    ModelMessage,
    ModelResponse,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ToolReturnPart,
)
from pydantic_ai.models import Model
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.settings import ModelSettings
from pydantic_ai.toolsets import AbstractToolset
from pydantic_ai.usage import RunUsage, UsageLimits

from .agents import build_agents, build_prompt
from .exceptions import FieldViolation, InvalidInput, WoollyError
from .failures import core_error
from .models import Models
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
    UsageMeter,
)

TOOL_RESULT_PREVIEW_CHARS = 500
"""How much of a tool's answer a ToolResult event carries (the model sees all of it)."""


class AgentRunner:
    """Runs one agent over one repository and yields its events.

    Args:
        model: The models runs may use, or just the server's model: `"local"` (the offline
            engine), a pydantic-ai model name, or a Model instance.
        repos_root: The directory whose subdirectories are the repositories.
        toolset: The tools agents may call; the built-in repository tools by default.
        limits: Input and per-run limits.
        tool_retries: How often a tool call with bad arguments goes back to the model.
        instrumentation: pydantic-ai's OpenTelemetry spans (agent run, model requests, tool
            calls) for this runner's agents; None = none.
    """

    def __init__(
        self,
        *,
        model: str | Model | Models = "local",
        repos_root: Path,
        toolset: AbstractToolset[RepoDeps] = REPOSITORY_TOOLSET,
        limits: Limits | None = None,
        tool_retries: int = 2,
        instrumentation: InstrumentationSettings | None = None,
    ) -> None:
        self.repos_root = repos_root.resolve()
        self.toolset = toolset
        self.limits = limits or Limits()
        self.tool_retries = tool_retries
        self.models = model if isinstance(model, Models) else Models(model)
        self._usage_limits = UsageLimits(
            request_limit=self.limits.max_model_requests,
            tool_calls_limit=self.limits.max_tool_calls,
        )
        self._agents = build_agents()
        if instrumentation is not None:
            # Per agent, not `Agent.instrument_all`: that is for the whole process, and a
            # process may hold several servers (tests), each with its own tracer provider.
            for agent in self._agents.values():
                agent.instrument = instrumentation

    @property
    def model_name(self) -> str:
        """The server's model (what runs use unless a saved agent names another)."""
        return self.models.default

    def check(self, request: RunRequest) -> Path:
        """Validate a request; return its repository directory.

        Raises:
            InvalidInput: with one violation per bad field.
            NotFound: when the repository does not exist.
        """
        violations = _query_violations(request.query, self.limits)
        violations += _context_violations(request.callers_context, self.limits)
        if violations:
            raise InvalidInput(violations)
        return resolve_repository(self.repos_root, request.repository)

    async def stream(
        self,
        request: RunRequest,
        *,
        meter: UsageMeter | None = None,
        deadline: float | None = None,
    ) -> AsyncGenerator[Event]:
        """Yield Started, then text and tool events as they happen, then Completed.

        A reader that stops early closes the stream in its own task (`contextlib.aclosing`):
        the agent runs in the reader's task, and its contexts cannot be left from another.

        Args:
            request: What to run.
            meter: Told what the model used, however the run ends (success, failure, cancel).
            deadline: The caller's deadline (event-loop time): model retries never wait past it.
        """
        deps = RepoDeps(request.repository, self.check(request), deadline)
        agent_type = request.agent_type
        saved = request.saved_agent
        spec = saved.model if saved and saved.model else self.model_name
        yield Started(model=spec, agent_type=agent_type)
        began = time.perf_counter()
        transcript = _Transcript(agent_type)
        toolset = self.toolset
        if saved is not None and saved.tools:
            allowed = frozenset(saved.tools)
            toolset = toolset.filtered(lambda _ctx, tool: tool.name in allowed)
        used: Usage | None = None
        with capture_run_messages() as messages:
            try:
                # Driven here, node by node, rather than through `run_stream_events`, which runs
                # the agent in a task of its own and hands every event over an anyio memory
                # stream (a checkpoint on each side and a task switch per event): 11 % fewer
                # calls per short run. The run's contexts are this task's, hence `aclosing`.
                async with self._agents[agent_type].iter(
                    build_prompt(request),
                    deps=deps,
                    model=self.models.get(spec, agent_type),
                    model_settings=_settings(request),
                    toolsets=[toolset],
                    instructions=saved.system_prompt if saved and saved.system_prompt else None,
                    usage_limits=self._usage_limits,
                    retries=self.tool_retries,
                ) as run:
                    async for node in run:
                        if Agent.is_model_request_node(node) or Agent.is_call_tools_node(node):
                            async with node.stream(run.ctx) as events:
                                async for raw in events:
                                    if (event := transcript.translate(raw)) is not None:
                                        yield event
                    if run.result is not None:
                        transcript.finish(run.result.usage, run.result.response.model_name)
                used = transcript.usage
            except asyncio.CancelledError as exc:
                state = RunCancelled.from_cancellation(exc)
                used = _usage(state.usage) if state is not None else _usage_in(messages)
                raise
            except GeneratorExit:  # whoever read the events stopped reading
                used = _usage_in(messages)
                raise
            except WoollyError:
                used = _usage_in(messages)
                raise
            except Exception as exc:
                used = _usage_in(messages)
                raise core_error(exc, self.limits, self.models.names) from exc
            finally:
                if meter is not None and used is not None:
                    meter.add(agent_type, used)
        # With fallbacks, the model that answered may not be the one asked.
        answered = self.models.spec_of(transcript.answered_by) if transcript.answered_by else spec
        yield Completed(
            transcript.result(
                model=answered,
                duration_s=time.perf_counter() - began,
                agent_id=saved.id if saved else "",
            ),
            agent_type=agent_type,
        )


def _settings(request: RunRequest) -> ModelSettings | None:
    """A saved agent's own sampling settings, if it has any."""
    saved = request.saved_agent
    if saved is None:
        return None
    settings: ModelSettings = {}
    if saved.temperature is not None:
        settings["temperature"] = saved.temperature
    if saved.max_output_tokens is not None:
        settings["max_tokens"] = saved.max_output_tokens
    return settings or None


def _usage(usage: RunUsage) -> Usage:
    return Usage(usage.input_tokens, usage.output_tokens, usage.requests, usage.tool_calls)


def _usage_in(messages: Sequence[ModelMessage]) -> Usage:
    """What the requests of a run that failed used, from the messages it exchanged."""
    responses = [m for m in messages if isinstance(m, ModelResponse)]
    tool_calls = sum(
        isinstance(part, ToolReturnPart)
        for m in messages
        if not isinstance(m, ModelResponse)
        for part in m.parts
    )
    return Usage(
        sum(r.usage.input_tokens for r in responses),
        sum(r.usage.output_tokens for r in responses),
        len(responses),
        tool_calls,
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
    answered_by: str = ""
    """The name the model that gave the final answer reports."""

    def translate(self, raw: AgentStreamEvent) -> Event | None:
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
        return None

    def finish(self, usage: RunUsage, model_name: str | None) -> None:
        """Record how the run ended: what it used, and which model gave the final answer."""
        self.usage = _usage(usage)
        self.answered_by = model_name or ""

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
