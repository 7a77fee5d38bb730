"""Turn an agent's Markdown answer into the structured fields of an AgentResult.

Agents stream plain text (so callers see it live); the structure is read back out of the
conventions their instructions ask for (see `agents._FORMAT`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .types import AgentType, ProposedFile, Suggestion

_IN_SHORT = re.compile(r"^\*\*In short:\*\*\s*(.+)$", re.MULTILINE)
_CONFIDENCE = re.compile(r"^\*\*Confidence:\*\*\s*([01](?:\.\d+)?)\s*$", re.MULTILINE)
_SECTION = re.compile(r"^## (.+)$", re.MULTILINE)
_TABLE_HEADER = "| Location | Symbol | Issue | Suggestion | Score |"
_FILE_BLOCK = re.compile(
    r"^\*\*File:\*\* `([^`]+)`\n```[a-z]*\n(.*?)^```", re.MULTILINE | re.DOTALL
)
_FILE_ARG_TOOLS = frozenset({"read_file", "code_outline"})


@dataclass(frozen=True)
class Shaped:
    """The fields of an AgentResult that come from reading its content."""

    condensed_summary: str | None
    next_actions: tuple[str, ...]
    sources: tuple[str, ...]
    confidence: float
    suggestions: tuple[Suggestion, ...]
    test_files: tuple[ProposedFile, ...]
    metadata: Mapping[str, Any]


def shape(
    agent_type: AgentType, content: str, tool_calls: Iterable[tuple[str, Mapping[str, Any]]]
) -> Shaped:
    """Read the structured fields out of `content`; `tool_calls` are (name, args) of the run."""
    calls = list(tool_calls)
    suggestions = _suggestions(content) if agent_type is AgentType.SIMPLIFIER else ()
    test_files = _test_files(content) if agent_type is AgentType.TESTER else ()
    sources = _bullets(content, "Sources") or _files_read(calls)
    summary = _IN_SHORT.search(content)
    metadata: dict[str, Any] = {
        "tool_calls": len(calls),
        "tools_used": sorted({name for name, _ in calls}),
        "files_read": len(_files_read(calls)),
    }
    if agent_type is AgentType.SIMPLIFIER:
        metadata["suggestion_count"] = len(suggestions)
    if agent_type is AgentType.TESTER:
        metadata["test_file_count"] = len(test_files)
    return Shaped(
        condensed_summary=summary.group(1).strip() if summary else None,
        next_actions=_bullets(content, "Next actions"),
        sources=sources,
        confidence=_confidence(content, evidence=len(sources)),
        suggestions=suggestions,
        test_files=test_files,
        metadata=metadata,
    )


def _section(content: str, title: str) -> str:
    """The text under `## title`, up to the next `## ` heading."""
    for match in _SECTION.finditer(content):
        if match.group(1).strip().lower() == title.lower():
            rest = content[match.end() :]
            following = _SECTION.search(rest)
            return rest[: following.start()] if following else rest
    return ""


def _bullets(content: str, title: str) -> tuple[str, ...]:
    lines = _section(content, title).splitlines()
    items = (
        line.strip()[2:].strip().strip("`")
        for line in lines
        if line.strip().startswith(("- ", "* "))
    )
    return tuple(dict.fromkeys(item for item in items if item))


def _confidence(content: str, *, evidence: int) -> float:
    stated = _CONFIDENCE.findall(content)
    if stated:
        return min(1.0, float(stated[-1]))
    # No stated confidence (a terse model): lean on how much the answer cites.
    return round(min(0.9, 0.3 + 0.1 * evidence), 2)


def _suggestions(content: str) -> tuple[Suggestion, ...]:
    start = content.find(_TABLE_HEADER)
    if start < 0:
        return ()
    rows: list[Suggestion] = []
    for line in content[start:].splitlines()[2:]:
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if not line.lstrip().startswith("|") or len(cells) != 5:
            break
        location, symbol, issue, suggestion, score = cells
        try:
            value = float(score)
        except ValueError:
            value = 0.0
        rows.append(Suggestion(location, symbol, issue, suggestion, value))
    return tuple(rows)


def _test_files(content: str) -> tuple[ProposedFile, ...]:
    return tuple(ProposedFile(path, body) for path, body in _FILE_BLOCK.findall(content))


def _files_read(calls: list[tuple[str, Mapping[str, Any]]]) -> tuple[str, ...]:
    paths = (args.get("path") for name, args in calls if name in _FILE_ARG_TOOLS)
    return tuple(dict.fromkeys(p for p in paths if isinstance(p, str) and p))
