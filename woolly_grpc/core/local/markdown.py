"""What each local composer returns, and the Markdown pieces the composers share."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    """One agent type's answer, before `compose` frames it."""

    summary: str
    body: list[str]
    next_actions: list[str]
    sources: list[str]
    found: bool
    """Whether the tools gave what this answer needed (it lowers the confidence if not)."""


def bullets(items: Iterable[str]) -> str:
    """A Markdown list, one item a line."""
    return "\n".join(f"- {item}" for item in items)


def names(items: list[str]) -> str:
    """The items as code, separated by commas."""
    return ", ".join(f"`{n}`" for n in items)


def plural(count: int, word: str) -> str:
    """`count` and `word`, with an `s` unless the count is 1."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
