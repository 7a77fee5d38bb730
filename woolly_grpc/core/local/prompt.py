"""The user prompt as `agents.build_prompt` writes it, read back into its parts."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_STEP = re.compile(r"^### Step (\d+): (.*)$", re.MULTILINE)
_CONTEXT = re.compile(r"\A```json\n(.*)\n```\s*\Z", re.DOTALL)


@dataclass(frozen=True)
class ParsedPrompt:
    """The parts of the user prompt that `agents.build_prompt` writes."""

    query: str
    repository: str = ""
    context: dict[str, Any] = field(default_factory=dict)
    earlier: list[tuple[int, str, str]] = field(default_factory=list)
    """(step index, agent type, content) of earlier chain steps."""


def parse_prompt(text: str) -> ParsedPrompt:
    """Split a prompt into its query, repository, context and earlier results.

    Sections other than the query may be missing; text that is not a well-formed section
    stays in the query.
    """
    head, earlier = "\n" + text, []
    start = head.find("\n## Earlier results\n### Step ")
    if start >= 0:
        tail = head[start + len("\n## Earlier results\n") :]
        head = head[:start]
        steps = list(_STEP.finditer(tail))
        for match, following in zip(steps, [*steps[1:], None], strict=True):
            content = tail[match.end() : following.start() if following else len(tail)]
            earlier.append((int(match.group(1)), match.group(2).strip(), content.strip()))
    context: dict[str, Any] = {}
    start = head.rfind("\n## Context\n")
    if start >= 0 and (block := _CONTEXT.match(head[start + len("\n## Context\n") :])):
        try:
            loaded = json.loads(block.group(1))
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            context, head = loaded, head[:start]
    repository = ""
    start = head.rfind("\n## Repository\n")
    if start >= 0:
        repository = head[start + len("\n## Repository\n") :].strip().split("\n")[0]
        head = head[:start]
    return ParsedPrompt(head.strip(), repository, context, earlier)
