"""Protobuf ⇄ core types: the only module that knows both the wire format and the core."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeAlias

from google.protobuf import json_format, struct_pb2

from ._gen.woolly.v1 import agent_pb2, agent_service_pb2, run_pb2
from .api import AGENT_TYPE_LABELS, agent_type_label, agent_type_value
from .core import (
    AGENT_SPECS,
    AgentResult,
    AgentType,
    ChainCompleted,
    ChainMode,
    ChainRequest,
    ChainStep,
    Completed,
    Event,
    InvalidInput,
    NotFound,
    ProposedFile,
    RunRequest,
    SavedAgent,
    Started,
    StepCompleted,
    StepStarted,
    Suggestion,
    TextDelta,
    ToolCall,
    ToolResult,
    Usage,
)
from .saved_agents import AgentFields, AgentRecord

SingleAgentRequest: TypeAlias = (
    agent_service_pb2.ExecuteRequest | agent_service_pb2.StreamExecuteRequest
)
"""Execute and StreamExecute take the same fields."""
AgentRunRequest: TypeAlias = SingleAgentRequest | agent_service_pb2.ExecuteChainRequest
"""Every request that starts a run."""


_TYPE_CHOICES = ", ".join(agent_pb2.AgentType.Name(agent_type_value(n)) for n in AGENT_TYPE_LABELS)


def agent_type_from_proto(value: int, field: str) -> AgentType:
    """The core AgentType of a proto enum value; INVALID_ARGUMENT for unspecified or unknown."""
    label = agent_type_label(value)
    if label not in AGENT_TYPE_LABELS:
        raise InvalidInput.one(field, f"must be one of {_TYPE_CHOICES} (got {value})")
    return AgentType(label)


def agent_type_to_proto(agent_type: AgentType) -> agent_pb2.AgentType.ValueType:
    """The proto enum value of a core AgentType (its value is the short name)."""
    return agent_type_value(agent_type.value)


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain Python values (numbers come back as floats)."""
    return json_format.MessageToDict(struct)


def _context(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A request's context; INVALID_ARGUMENT for numbers JSON cannot hold (NaN, Infinity)."""
    try:
        return struct_to_dict(struct)
    except ValueError as exc:  # json_format refuses them: they would come back as strings
        problem = "must hold only finite numbers (not NaN or Infinity)"
        raise InvalidInput.one("context", problem) from exc


def dict_to_struct(values: dict[str, Any] | Any) -> struct_pb2.Struct:
    """Plain JSON-like values as a Struct."""
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def agent_refs(request: AgentRunRequest) -> list[tuple[str, str]]:
    """The saved agents a run request names, as (request field, agent id)."""
    if isinstance(request, agent_service_pb2.ExecuteChainRequest):
        return [
            (f"steps[{i}].agent_id", step.agent_id)
            for i, step in enumerate(request.steps)
            if step.WhichOneof("agent") == "agent_id"
        ]
    return [("agent_id", request.agent_id)] if request.WhichOneof("agent") == "agent_id" else []


def run_request(
    request: SingleAgentRequest, saved: Mapping[str, SavedAgent] | None = None
) -> RunRequest:
    """The core request of an Execute / StreamExecute call.

    Args:
        request: The call's request.
        saved: The saved agents the request names (`agent_refs`), loaded by id.
    """
    agent = _saved(request.agent_id, saved) if request.WhichOneof("agent") == "agent_id" else None
    return RunRequest(
        repository=request.repository_name,
        agent_type=(
            agent.base_type if agent else agent_type_from_proto(request.agent_type, "agent_type")
        ),
        query=request.user_query,
        context=_context(request.context),
        saved_agent=agent,
    )


def _saved(agent_id: str, saved: Mapping[str, SavedAgent] | None) -> SavedAgent:
    if saved is None or agent_id not in saved:
        raise NotFound("agent", agent_id)
    return saved[agent_id]


def chain_request(
    request: agent_service_pb2.ExecuteChainRequest, saved: Mapping[str, SavedAgent] | None = None
) -> tuple[ChainRequest, str]:
    """The core request of an ExecuteChain call, and the field that listed its steps.

    Args:
        request: The call's request.
        saved: The saved agents its steps name (`agent_refs`), loaded by id.
    """
    if request.agent_chain and request.steps:
        raise InvalidInput.one("steps", "give the agents as agent_chain or as steps, not both")
    if request.steps:
        field = "steps"
        steps = tuple(_chain_step(step, i, saved) for i, step in enumerate(request.steps))
    else:
        field = "agent_chain"
        steps = tuple(
            ChainStep(agent_type_from_proto(value, f"agent_chain[{i}]"))
            for i, value in enumerate(request.agent_chain)
        )
    mode = (
        ChainMode.PARALLEL
        if request.mode == agent_pb2.CHAIN_MODE_PARALLEL
        else ChainMode.SEQUENTIAL
    )
    chain = ChainRequest(
        repository=request.repository_name,
        steps=steps,
        query=request.user_query,
        context=_context(request.context),
        mode=mode,
    )
    return chain, field


def _chain_step(
    step: agent_pb2.ChainStep, index: int, saved: Mapping[str, SavedAgent] | None
) -> ChainStep:
    if step.WhichOneof("agent") == "agent_id":
        agent = _saved(step.agent_id, saved)
        return ChainStep(agent.base_type, agent)
    return ChainStep(agent_type_from_proto(step.agent_type, f"steps[{index}].agent_type"))


def agent_fields(message: agent_pb2.AgentDefinition) -> AgentFields:
    """The writable fields of an AgentDefinition (an unset `is_active` means active)."""
    try:
        base_type: AgentType | None = agent_type_from_proto(message.base_type, "agent.base_type")
    except InvalidInput:
        base_type = None  # reported with the other fields' problems
    return AgentFields(
        name=message.name,
        base_type=base_type,
        description=message.description,
        system_prompt=message.system_prompt,
        tools=tuple(message.tools),
        repository=message.repository,
        is_active=message.is_active if message.HasField("is_active") else True,
        model=message.model,
        temperature=message.temperature if message.HasField("temperature") else None,
        max_output_tokens=(
            message.max_output_tokens if message.HasField("max_output_tokens") else None
        ),
    )


def agent_to_proto(record: AgentRecord) -> agent_pb2.AgentDefinition:
    """A stored saved agent as an AgentDefinition."""
    agent = record.fields
    message = agent_pb2.AgentDefinition(
        id=record.id,
        name=agent.name,
        description=agent.description,
        system_prompt=agent.system_prompt,
        base_type=(
            agent_type_to_proto(agent.base_type)
            if agent.base_type
            else agent_pb2.AGENT_TYPE_UNSPECIFIED
        ),
        tools=agent.tools,
        repository=agent.repository,
        is_active=agent.is_active,
        revision=record.revision,
        model=agent.model,
        temperature=agent.temperature,
        max_output_tokens=agent.max_output_tokens,
    )
    message.create_time.FromDatetime(record.create_time)
    message.update_time.FromDatetime(record.update_time)
    return message


def usage_to_proto(usage: Usage) -> agent_pb2.Usage:
    """The proto Usage."""
    return agent_pb2.Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        requests=usage.requests,
        tool_calls=usage.tool_calls,
    )


def result_to_proto(result: AgentResult) -> agent_pb2.AgentResult:
    """The proto AgentResult."""
    message = agent_pb2.AgentResult(
        agent_type=agent_type_to_proto(result.agent_type),
        content=result.content,
        metadata=dict_to_struct(dict(result.metadata)),
        confidence=result.confidence,
        sources=result.sources,
        suggestions_table=[
            agent_pb2.Suggestion(
                location=s.location,
                symbol=s.symbol,
                issue=s.issue,
                suggestion=s.suggestion,
                score=s.score,
            )
            for s in result.suggestions
        ],
        test_files_created=[
            agent_pb2.ProposedFile(path=f.path, content=f.content) for f in result.test_files
        ],
        next_actions=result.next_actions,
        usage=usage_to_proto(result.usage),
        model=result.model,
        agent_id=result.agent_id,
        cached=result.cached,
    )
    message.duration.FromTimedelta(timedelta(seconds=result.duration_s))
    if result.condensed_summary is not None:
        message.condensed_summary = result.condensed_summary
    return message


def result_from_proto(message: agent_pb2.AgentResult) -> AgentResult:
    """The core AgentResult of a proto one (for results read back from the cache)."""
    return AgentResult(
        agent_type=agent_type_from_proto(message.agent_type, "agent_type"),
        content=message.content,
        metadata=struct_to_dict(message.metadata),
        confidence=message.confidence,
        sources=tuple(message.sources),
        suggestions=tuple(
            Suggestion(s.location, s.symbol, s.issue, s.suggestion, s.score)
            for s in message.suggestions_table
        ),
        test_files=tuple(ProposedFile(f.path, f.content) for f in message.test_files_created),
        next_actions=tuple(message.next_actions),
        condensed_summary=(
            message.condensed_summary if message.HasField("condensed_summary") else None
        ),
        usage=Usage(
            message.usage.input_tokens,
            message.usage.output_tokens,
            message.usage.requests,
            message.usage.tool_calls,
        ),
        model=message.model,
        duration_s=message.duration.ToTimedelta().total_seconds(),
        agent_id=message.agent_id,
        cached=message.cached,
    )


def canonical_json(values: Mapping[str, Any]) -> str:
    """The same JSON text for equal values, whatever their key order (for cache keys)."""
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_to_proto(run_id: str, sequence: int, event: Event) -> agent_service_pb2.WatchRunResponse:
    """One run event as a WatchRunResponse (wire-compatible with the other stream responses)."""
    message = agent_service_pb2.WatchRunResponse(run_id=run_id, sequence=sequence)
    if event.step is not None:
        message.step_index = event.step
    if event.agent_type is not None:
        message.agent_type = agent_type_to_proto(event.agent_type)
    match event:
        case Started():
            message.started.CopyFrom(
                run_pb2.RunStarted(model=event.model, step_count=event.step_count)
            )
        case TextDelta():
            message.text_delta.text = event.text
        case ToolCall():
            message.tool_call.CopyFrom(
                run_pb2.ToolCall(
                    tool_call_id=event.call_id, name=event.name, args_json=event.args_json
                )
            )
        case ToolResult():
            message.tool_result.CopyFrom(
                run_pb2.ToolResult(
                    tool_call_id=event.call_id,
                    name=event.name,
                    content=event.content,
                    truncated=event.truncated,
                )
            )
        case Completed():
            message.completed.result.CopyFrom(result_to_proto(event.result))
        case StepStarted():
            message.step_started.agent_id = event.agent_id
        case StepCompleted():
            message.step_completed.result.CopyFrom(result_to_proto(event.result))
        case ChainCompleted():
            message.chain_completed.results.extend(result_to_proto(r) for r in event.results)
            message.chain_completed.final_context.CopyFrom(
                dict_to_struct(dict(event.final_context))
            )
    return message


def agent_type_infos() -> list[agent_service_pb2.AgentTypeInfo]:
    """ListAgentTypes' answer: every built-in type with what it does."""
    return [
        agent_service_pb2.AgentTypeInfo(
            agent_type=agent_type_to_proto(spec.agent_type),
            name=spec.agent_type.value,
            description=spec.description,
            capabilities=spec.capabilities,
        )
        for spec in AGENT_SPECS.values()
    ]


def merge_text_deltas(events: Sequence[bytes]) -> list[bytes]:
    """Serialized stream events with each run of adjacent `text_delta`s of one step merged.

    Contract §1: a reader behind a run, or a replay, may get one message for several deltas; it
    carries their text joined and the last one's sequence, so sequences still increase and
    WatchRun(after_sequence) still resumes exactly. Nothing else is merged or reordered. The
    events may be of any streamed response type: they share one layout, read here as
    WatchRunResponse. One event is returned as it is, unparsed.
    """
    if len(events) < 2:
        return list(events)
    merged: list[bytes] = []
    group: list[str] = []  # the texts of the open run of deltas
    last: agent_service_pb2.WatchRunResponse | None = None  # its latest event
    last_raw = b""

    def close() -> None:
        if last is not None:
            if len(group) == 1:
                merged.append(last_raw)
            else:
                last.text_delta.text = "".join(group)
                merged.append(last.SerializeToString())

    for raw in events:
        event = agent_service_pb2.WatchRunResponse.FromString(raw)
        if event.WhichOneof("event") != "text_delta":
            close()
            last, group = None, []
            merged.append(raw)
        elif last is not None and _same_step(last, event):
            group.append(event.text_delta.text)
            last, last_raw = event, raw
        else:
            close()
            last, last_raw, group = event, raw, [event.text_delta.text]
    close()
    return merged


def _same_step(
    a: agent_service_pb2.WatchRunResponse, b: agent_service_pb2.WatchRunResponse
) -> bool:
    return a.agent_type == b.agent_type and (
        (a.step_index, a.HasField("step_index")) == (b.step_index, b.HasField("step_index"))
    )
