"""What the local engine learned in one run: the tool results, read back into plain facts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from woolly_grpc.core._outline import DEFINITION_KEYS
from woolly_grpc.core.tools import is_test_path
from woolly_grpc.core.types import AgentType

from .prompt import ParsedPrompt

Definition = dict[str, Any]
"""One definition of a code_outline result."""

_WANTED_TOOLS: dict[AgentType, tuple[str, ...]] = {
    AgentType.SUMMARIZER: ("repository_info", "list_files", "read_file", "code_outline"),
    AgentType.SIMPLIFIER: ("list_files", "code_outline"),
    AgentType.TESTER: ("list_files", "read_file"),
    AgentType.DOCUMENTATION: ("list_files", "code_outline", "read_file"),
    AgentType.CONVO_STARTER: (
        "repository_info", "list_files", "search_code", "code_outline", "read_file",
    ),
    AgentType.CHAT_ASSISTANT: ("search_code", "read_file"),
}  # fmt: skip
"""The tools each agent type uses; the answer names those the run did not offer."""

_SEARCH_HIT = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+): (?P<text>.*)$")
_TRUNCATED = re.compile(
    r"\[truncated at 64 KiB; call read_file\(path=.*, start_line=(\d+)\) to read on\]$"
)
_EMPTY_READ = re.compile(r"\[`.*` has fewer than \d+ lines\]")


@dataclass(frozen=True)
class ToolOutcome:
    """One tool call of the current run and what came back."""

    name: str
    args: dict[str, Any]
    content: Any
    ok: bool
    """False when the tool asked for a retry or failed; `content` is then the message."""


@dataclass(frozen=True)
class Evidence:
    """Everything the engine knows when it answers one model request."""

    agent_type: AgentType
    prompt: ParsedPrompt
    outcomes: tuple[ToolOutcome, ...]
    available: frozenset[str]
    """The names of the tools this run offers."""

    def returned(self, name: str) -> list[Any]:
        """What tool `name` returned when it succeeded, in call order."""
        return [o.content for o in self.outcomes if o.name == name and o.ok]

    @property
    def missing(self) -> list[str]:
        """The tools this agent type uses but this run does not offer."""
        return [t for t in _WANTED_TOOLS[self.agent_type] if t not in self.available]

    @property
    def info(self) -> dict[str, Any]:
        """What repository_info returned, or {}."""
        return next((c for c in self.returned("repository_info") if isinstance(c, dict)), {})

    @property
    def files(self) -> list[str]:
        """Every path list_files returned, sorted."""
        listed = [p for c in self.returned("list_files") if isinstance(c, list) for p in c]
        return sorted({p for p in listed if isinstance(p, str) and not p.startswith("... ")})

    @property
    def sources(self) -> list[str]:
        """The Python files that are not tests."""
        return [p for p in self.files if p.endswith(".py") and not is_test_path(p)]

    @property
    def tests(self) -> list[str]:
        """The Python test files."""
        return [p for p in self.files if p.endswith(".py") and is_test_path(p)]

    @property
    def readme(self) -> str | None:
        """The README path, from repository_info or the file list."""
        named = [p for p in self.files if "/" not in p and p.lower().startswith("readme")]
        found = self.info.get("readme") or min(named, default=None)
        return found if isinstance(found, str) else None

    @property
    def outlines(self) -> list[dict[str, Any]]:
        """The Python outlines code_outline returned, by path."""
        found = [c for c in self.returned("code_outline") if _is_outline(c)]
        return sorted(found, key=outline_path)

    @property
    def reads(self) -> list[tuple[str, int, str]]:
        """(path, start line, text) of every successful read_file."""
        done = [o for o in self.outcomes if o.name == "read_file" and o.ok]
        return [
            (str(o.args.get("path")), int(o.args.get("start_line", 1)), o.content)
            for o in done
            if isinstance(o.content, str)
        ]

    def text_of(self, path: str | None) -> str:
        """What read_file returned for `path`, or ""."""
        return next((text for p, _, text in self.reads if p == path), "")

    def full_text(self, path: str) -> str | None:
        """The whole text of `path`, from its read_file windows.

        None when it was not read, or not read to its end.
        """
        windows = sorted((start, text) for p, start, text in self.reads if p == path)
        joined, expected = "", 1
        for start, text in windows:
            if start != expected:
                continue
            cut = _TRUNCATED.search(text)
            if cut is None:
                return joined + ("" if _EMPTY_READ.fullmatch(text) else text)
            joined += text[: cut.start()]
            expected = int(cut.group(1))
        return None

    def unfinished_reads(self) -> list[tuple[str, int]]:
        """(path, next line) of each file whose last read window was cut short at 64 KiB."""
        latest: dict[str, tuple[int, str]] = {}
        for path, start, text in self.reads:
            if start >= latest.get(path, (0, ""))[0]:
                latest[path] = (start, text)
        return [
            (path, int(cut.group(1)))
            for path, (_, text) in latest.items()
            if (cut := _TRUNCATED.search(text))
        ]

    @property
    def searched(self) -> list[str]:
        """The queries search_code answered."""
        return [str(o.args.get("query")) for o in self.outcomes if o.name == "search_code" and o.ok]

    @property
    def hits(self) -> list[tuple[str, int, str]]:
        """Every (path, line, text) search_code returned, without repeats."""
        found = [h for c in self.returned("search_code") if isinstance(c, list) for h in c]
        matches = (_SEARCH_HIT.match(h) for h in found if isinstance(h, str))
        return list(dict.fromkeys((m["path"], int(m["line"]), m["text"]) for m in matches if m))


def rank_hits(hits: list[tuple[str, int, str]], words: list[str]) -> list[tuple[str, int, str]]:
    """Search hits best first: definitions of the words, then code that is not a test."""

    def rank(hit: tuple[str, int, str]) -> int:
        path, _, text = hit
        defined = any(defines(text, w) for w in words)
        return 4 * defined + 2 * (not is_test_path(path)) + path.endswith(".py")

    return sorted(hits, key=rank, reverse=True)


def defines(line: str, word: str) -> bool:
    """Whether a line of code defines a function or class named `word`."""
    return re.search(rf"\b(def|class)\s+{re.escape(word)}\b", line, re.IGNORECASE) is not None


def _is_outline(value: object) -> bool:
    """Whether `value` is a Python outline as `tools.code_outline` returns it (MCP tools differ)."""
    if not isinstance(value, dict) or not isinstance(value.get("definitions"), list):
        return False
    return all(isinstance(d, dict) and DEFINITION_KEYS <= d.keys() for d in value["definitions"])


def outline_path(outline: dict[str, Any]) -> str:
    """The repository-relative path of the module an outline describes."""
    return str(outline["path"])


def public_definitions(outline: dict[str, Any]) -> list[Definition]:
    """The public top-level functions and classes of a module."""
    return [d for d in outline["definitions"] if d["is_public"] and d["kind"] != "method"]


def module_name(path: str) -> str:
    """The dotted import name of a Python file, e.g. `pkg.mod` for `src/pkg/mod.py`."""
    parts = list(PurePosixPath(path).with_suffix("").parts)
    parts = parts[1:] if parts[0] == "src" and len(parts) > 1 else parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)
