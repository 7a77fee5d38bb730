"""The offline `local` engine: a deterministic pydantic-ai FunctionModel that reads the repository.

Each model request is one turn, worked out from the message history alone: turn 1 calls the
first tools, turn 2 follows up on what they returned, and the last turn streams the answer
composed from every tool result (`answers.py`). It only calls tools the run offers.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    ModelResponsePart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from woolly_grpc.core.types import AgentType

from .answers import compose
from .evidence import Evidence, ToolOutcome, rank_hits
from .prompt import parse_prompt
from .tester import planned_reads

__all__ = ["evidence_of", "local_model"]

_Call = tuple[str, dict[str, Any]]
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STOPWORDS = frozenset(
    """about all and any are but can code could defined define definition did does doing done
    explain file files find for from function functions get has have how implement implemented
    into is its let method methods not please repo repository see should show tell than that
    the their them then there these they this use used uses using was what when where which
    who why will with work works would you your""".split()
)
_MAX_OUTLINES = 30
_MAX_TURNS = 8
_MAX_READ_ONS = 8
"""The tester reads long files on, one 64 KiB window a turn; the answer comes by this turn."""


def local_model(agent_type: AgentType) -> FunctionModel:
    """The offline engine for one agent type, as a pydantic-ai model named `local`."""

    async def stream(
        messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | DeltaToolCalls]:
        # Composing parses test files with `ast`: keep that off the event loop.
        text, calls = await asyncio.to_thread(_turn, agent_type, messages, info)
        for chunk in text:
            yield chunk
        for index, (call_id, name, args) in enumerate(calls):
            yield {index: DeltaToolCall(name, json.dumps(args), tool_call_id=call_id)}

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        text, calls = _turn(agent_type, messages, info)
        parts: list[ModelResponsePart] = [TextPart("".join(text))] if text else []
        parts += [ToolCallPart(name, args, tool_call_id=call_id) for call_id, name, args in calls]
        return ModelResponse(parts=parts)

    return FunctionModel(respond, stream_function=stream, model_name="local")


def _turn(
    agent_type: AgentType, messages: list[ModelMessage], info: AgentInfo
) -> tuple[list[str], list[tuple[str, str, dict[str, Any]]]]:
    """The text chunks and the (id, name, args) tool calls of this model response."""
    _, since = _latest_prompt(messages)
    turn = 1 + sum(isinstance(m, ModelResponse) for m in since)
    evidence = evidence_of(agent_type, messages, [tool.name for tool in info.function_tools])
    planned = (
        _first_calls(evidence)
        if turn == 1
        else _follow_ups(evidence)
        if turn == 2
        else _read_on(evidence)
        if turn <= _MAX_TURNS
        else []
    )
    fitting = [(name, args) for name, args in planned if _fits(info, name, args)]
    calls = [(f"local-{turn}-{i}", name, args) for i, (name, args) in enumerate(fitting)]
    if calls:
        name = evidence.prompt.repository
        preamble = (
            f"Reading the repository `{name}`…\n\n" if name else "Reading the repository…\n\n"
        )
        return ([preamble] if turn == 1 else []), calls
    return [chunk for chunk in re.split(r"(?<=\n\n)", compose(evidence)) if chunk], []


def evidence_of(
    agent_type: AgentType, messages: list[ModelMessage], tools: Sequence[str]
) -> Evidence:
    """What the engine knows after `messages`, with the tools named `tools` offered.

    `bench/studies/tester_eval.py` reads a finished run back with it.
    """
    prompt, since = _latest_prompt(messages)
    return Evidence(
        agent_type=agent_type,
        prompt=parse_prompt(prompt),
        outcomes=_outcomes(since),
        available=frozenset(tools),
    )


def _latest_prompt(messages: list[ModelMessage]) -> tuple[str, list[ModelMessage]]:
    """The latest user prompt's text and the messages that came after it."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        # pydantic-ai adds notes of its own as UserPromptPart subclasses (e.g. when a tool
        # returned text that looks like a `<system>` block); only the caller's prompt counts.
        prompts = [p for p in message.parts if type(p) is UserPromptPart]
        if isinstance(message, ModelRequest) and prompts:
            content = prompts[-1].content
            text = content if isinstance(content, str) else _join_text(content)
            return text, messages[index + 1 :]
    return "", messages


def _join_text(content: Sequence[object]) -> str:
    return "\n".join(item for item in content if isinstance(item, str))


def _outcomes(messages: list[ModelMessage]) -> tuple[ToolOutcome, ...]:
    """Every answered tool call, in the order it was made (parallel calls finish in any order)."""
    returns = {
        part.tool_call_id: part
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    }
    return tuple(
        ToolOutcome(call.tool_name, call.args_as_dict(), done.content, done.outcome == "success")
        for message in messages
        if isinstance(message, ModelResponse)
        for call in message.parts
        if isinstance(call, ToolCallPart) and (done := returns.get(call.tool_call_id))
    )


def _fits(info: AgentInfo, name: str, args: dict[str, Any]) -> bool:
    """Whether the run offers tool `name` and it takes these arguments (MCP tools may not)."""
    for tool in info.function_tools:
        if tool.name == name:
            properties = tool.parameters_json_schema.get("properties", {})
            return all(key in properties for key in args)
    return False


def _first_calls(ev: Evidence) -> list[_Call]:
    if ev.agent_type is AgentType.CHAT_ASSISTANT:
        words = _keywords(ev.prompt.query)[:3]
        searches: list[_Call] = [("search_code", {"query": w, "max_results": 30}) for w in words]
        return searches or [("repository_info", {})]  # nothing to search for: look around
    if ev.agent_type is AgentType.CONVO_STARTER:
        return [
            ("repository_info", {}),
            ("list_files", {}),
            ("search_code", {"query": "TODO", "max_results": 10}),
            ("search_code", {"query": "FIXME", "max_results": 10}),
        ]
    if ev.agent_type is AgentType.SUMMARIZER:
        return [("repository_info", {}), ("list_files", {})]
    return [("list_files", {})]


def _follow_ups(ev: Evidence) -> list[_Call]:
    readme = [("read_file", {"path": ev.readme})] if ev.readme else []
    outline = [("code_outline", {"path": p}) for p in ev.sources]
    match ev.agent_type:
        case AgentType.SUMMARIZER:
            return readme + sorted(outline, key=_entry_first)[:8]
        case AgentType.SIMPLIFIER:
            return outline[:_MAX_OUTLINES]
        case AgentType.TESTER:
            return [("read_file", {"path": p, "max_lines": 20000}) for p in planned_reads(ev.files)]
        case AgentType.DOCUMENTATION:
            return readme + outline[:_MAX_OUTLINES]
        case AgentType.CONVO_STARTER:
            return readme + sorted(outline, key=_entry_first)[:6]
        case AgentType.CHAT_ASSISTANT:
            return _reads_around_hits(ev)


def _read_on(ev: Evidence) -> list[_Call]:
    """The tester's reads of the files cut short at 64 KiB, from where they stopped."""
    if ev.agent_type is not AgentType.TESTER:
        return []
    return [
        ("read_file", {"path": path, "start_line": line, "max_lines": 20000})
        for path, line in ev.unfinished_reads()
    ][:_MAX_READ_ONS]


def _entry_first(call: _Call) -> tuple[bool, int, str]:
    """Order modules entry points first, then shallow before deep."""
    path = str(call[1]["path"])
    entry = path.rsplit("/", 1)[-1] in {"__main__.py", "main.py", "app.py", "cli.py"}
    return not entry, path.count("/"), path


def _reads_around_hits(ev: Evidence) -> list[_Call]:
    """Read around the best hits, one window per file, at most three."""
    calls: dict[str, _Call] = {}
    for path, line, _ in rank_hits(ev.hits, ev.searched):
        window = {"path": path, "start_line": max(1, line - 3), "max_lines": 14}
        calls.setdefault(path, ("read_file", window))
    return list(calls.values())[:3]


def _keywords(query: str) -> list[str]:
    """The words of `query` worth searching for: identifiers first, then longer words first."""
    words = dict.fromkeys(
        w for w in _WORD.findall(query) if len(w) >= 3 and w.lower() not in _STOPWORDS
    )
    return sorted(words, key=lambda w: (not _is_identifier(w), -len(w)))


def _is_identifier(word: str) -> bool:
    return "_" in word or any(c.isdigit() for c in word) or word[1:] != word[1:].lower()
