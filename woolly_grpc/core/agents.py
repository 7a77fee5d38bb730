"""The six agent types: what each is for, its instructions, and the prompt every agent gets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic_ai import Agent

from .tools import RepoDeps
from .types import AgentType, RunRequest

PROMPT_VERSION = "2026-12-02.2"
"""Changes whenever instructions, prompt layout or result shaping change; part of the cache key."""

_FORMAT = """
Use the repository tools to look before you answer; never guess file contents.
Write GitHub Markdown and follow these conventions exactly, they are parsed:
- one line `**In short:** <one or two sentences>`;
- a section `## Next actions` with 2-4 `- ` bullets;
- a section `## Sources` with `- path` or `- path:line` bullets for what the answer rests on;
- a last line `**Confidence:** 0.NN` (0 to 1: how well the evidence supports the answer).
""".strip()


@dataclass(frozen=True)
class AgentSpec:
    """What one agent type is for and how it is instructed."""

    agent_type: AgentType
    description: str
    """One sentence for ListAgentTypes."""
    capabilities: tuple[str, ...]
    """The AgentResult fields this type fills beyond content."""
    instructions: str


_COMMON_CAPABILITIES = ("condensed_summary", "next_actions", "sources", "confidence")

AGENT_SPECS: Mapping[AgentType, AgentSpec] = {
    spec.agent_type: spec
    for spec in (
        AgentSpec(
            AgentType.SIMPLIFIER,
            "Finds the longest and most nested functions and suggests concrete splits.",
            ("suggestions_table", *_COMMON_CAPABILITIES),
            "You simplify code. Outline the source files, rank functions by length, nesting and "
            "parameter count, and propose concrete refactorings (which lines to extract into which "
            "helper, which parameters to group). Put them in a Markdown table with the header row "
            "`| Location | Symbol | Issue | Suggestion | Score |`, Location as `path:line`, "
            "most worthwhile first, no `|` inside cells.",
        ),
        AgentSpec(
            AgentType.TESTER,
            "Finds public functions no test refers to and proposes pytest cases for them.",
            ("test_files_created", *_COMMON_CAPABILITIES),
            "You write tests. Find the public functions and classes that no test refers to and "
            "propose pytest files for them. Give each file as a line `**File:** `tests/test_x.py`` "
            "followed at once by a ```python block holding the whole file.",
        ),
        AgentSpec(
            AgentType.CONVO_STARTER,
            "Asks pointed questions about what it found, to open a conversation about the code.",
            _COMMON_CAPABILITIES,
            "You open a conversation about the code. Look at the layout, the README and a few "
            "modules, then ask three to six pointed questions grounded in what you found "
            "(untested modules, very long functions, TODOs, gaps in the README, the user's query).",
        ),
        AgentSpec(
            AgentType.SUMMARIZER,
            "Describes the repository: layout, languages, entry points and README.",
            _COMMON_CAPABILITIES,
            "You summarise repositories. Describe the layout, languages, entry points, what the "
            "README says, and the main modules with their public functions.",
        ),
        AgentSpec(
            AgentType.DOCUMENTATION,
            "Drafts reference documentation from docstrings and signatures.",
            _COMMON_CAPABILITIES,
            "You write reference documentation. For each module, list its public classes and "
            "functions with their signatures and docstrings, and name the public ones that have "
            "no docstring.",
        ),
        AgentSpec(
            AgentType.CHAT_ASSISTANT,
            "Answers the user's question from the code, citing file:line sources.",
            _COMMON_CAPABILITIES,
            "You answer questions about the code. Search for what the question names, read around "
            "the hits, and answer briefly, citing `path:line` for every claim. If nothing matches, "
            "say so plainly.",
        ),
    )
}


_EARLIER_RESULT_CHARS = 6000
"""How much of each earlier step's content a later step's prompt carries."""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "\n[…]"


def build_agents() -> dict[AgentType, Agent[RepoDeps, str]]:
    """Build one reusable pydantic-ai Agent per type (no model and no tools: both come per run)."""
    return {
        spec.agent_type: Agent(
            None,
            deps_type=RepoDeps,
            output_type=str,
            name=spec.agent_type.value,
            instructions=f"{spec.instructions}\n\n{_FORMAT}",
        )
        for spec in AGENT_SPECS.values()
    }


def build_prompt(request: RunRequest) -> str:
    """The user prompt: the query, then the repository, context and earlier chain results."""
    parts = [request.query.strip(), f"## Repository\n{request.repository}"]
    # Earlier results are in the context too (callers read them there), but the model gets
    # each once: under "Earlier results" below.
    if context := request.callers_context:
        text = json.dumps(context, indent=2, sort_keys=True, ensure_ascii=False)
        parts.append(f"## Context\n```json\n{text}\n```")
    if request.earlier_results:
        earlier = "\n\n".join(
            f"### Step {i}: {r.agent_type.value}\n{_clip(r.content, _EARLIER_RESULT_CHARS)}"
            for i, r in enumerate(request.earlier_results)
        )
        parts.append(f"## Earlier results\n{earlier}")
    return "\n\n".join(parts)
