"""How the local engine turns what the repository tools returned into a Markdown answer.

Every answer follows the conventions `shaping.py` reads back: an `**In short:**` line, a
`## Next actions` list, a `## Sources` list and a `**Confidence:**` line. Each agent type's
composer writes the middle; `compose` frames it the same way for all of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from woolly_grpc.core.types import AgentType

from .conversation import chat_assistant, convo_starter
from .descriptions import documentation, summarizer
from .evidence import Evidence
from .improvements import simplifier
from .markdown import Answer, bullets, clip, names
from .tester import tester

_COMPOSERS: dict[AgentType, Callable[[Evidence], Answer]] = {
    AgentType.SUMMARIZER: summarizer,
    AgentType.SIMPLIFIER: simplifier,
    AgentType.TESTER: tester,
    AgentType.DOCUMENTATION: documentation,
    AgentType.CONVO_STARTER: convo_starter,
    AgentType.CHAT_ASSISTANT: chat_assistant,
}


def compose(ev: Evidence) -> str:
    """The whole Markdown answer for the agent type in `ev`."""
    answer = _COMPOSERS[ev.agent_type](ev)
    parts = [_earlier_note(ev.prompt.earlier)] if ev.prompt.earlier else []
    parts.append(f"**In short:** {answer.summary}")
    if not ev.available:
        parts.append(
            "No repository tools are available to this agent, so this rests on the prompt."
        )
    elif ev.missing:
        parts.append(
            f"**Could not use:** {names(ev.missing)} (not available to this agent), so what "
            "needs them is left out."
        )
    parts += answer.body
    actions = [*answer.next_actions, "Ask the chat assistant a follow-up question about the code."]
    parts.append("## Next actions\n" + bullets(actions[: max(2, min(4, len(answer.next_actions)))]))
    if answer.sources:
        parts.append("## Sources\n" + bullets(f"`{s}`" for s in dict.fromkeys(answer.sources)))
    calls = sum(o.ok for o in ev.outcomes)
    confidence = (0.4 + 0.05 * min(calls, 10) if answer.found else 0.25) - 0.1 * len(ev.missing)
    parts.append(f"**Confidence:** {max(0.1, min(0.95, confidence)):.2f}")
    return "\n\n".join(parts) + "\n"


def _earlier_note(earlier: list[tuple[int, str, str]]) -> str:
    """One line per earlier chain step: its `In short` line, or else its first plain line."""
    lines = []
    for step, agent, text in earlier:
        short = re.search(r"^\*\*In short:\*\*\s*(.+)$", text, re.MULTILINE)
        plain = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("#", "**"))]
        gist = short.group(1) if short else plain[0] if plain else "(no text)"
        lines.append(f"Building on step {step} ({agent}): {clip(gist.strip(), 200)}")
    return "  \n".join(lines)
