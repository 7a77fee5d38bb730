"""How the local engine turns what the repository tools returned into a Markdown answer.

Every answer follows the conventions `shaping.py` reads back: an `**In short:**` line, a
`## Next actions` list, a `## Sources` list and a `**Confidence:**` line.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from .tools import is_test_path
from .types import AgentType

if TYPE_CHECKING:
    from .local_model import ParsedPrompt

_Def = dict[str, Any]
"""One definition of a code_outline result."""

_WANTED_TOOLS: dict[AgentType, tuple[str, ...]] = {
    AgentType.SUMMARIZER: ("repository_info", "list_files", "read_file", "code_outline"),
    AgentType.SIMPLIFIER: ("list_files", "code_outline"),
    AgentType.TESTER: ("list_files", "code_outline", "read_file"),
    AgentType.DOCUMENTATION: ("list_files", "code_outline", "read_file"),
    AgentType.CONVO_STARTER: (
        "repository_info", "list_files", "search_code", "code_outline", "read_file",
    ),
    AgentType.CHAT_ASSISTANT: ("search_code", "read_file"),
}  # fmt: skip
"""The tools each agent type uses; the answer names those the run did not offer."""

_DEF_KEYS = frozenset(
    {"kind", "name", "qualname", "line", "end_line", "lines", "max_depth", "params"}
    | {"signature", "docstring", "is_public", "blocks"}
)
_HIT = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+): (?P<text>.*)$")
_SAMPLES = {
    "int": "2", "float": "2.0", "str": '"text"', "bool": "True", "bytes": 'b"data"',
    "list": "[]", "dict": "{}", "tuple": "()", "set": "set()",
}  # fmt: skip
_HELPER_SUFFIX = {"for": "item", "while": "step", "if": "case", "try": "attempt"}


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

    def ok(self, name: str) -> list[Any]:
        """What tool `name` returned when it succeeded, in call order."""
        return [o.content for o in self.outcomes if o.name == name and o.ok]

    @property
    def missing(self) -> list[str]:
        """The tools this agent type uses but this run does not offer."""
        return [t for t in _WANTED_TOOLS[self.agent_type] if t not in self.available]

    @property
    def info(self) -> dict[str, Any]:
        """What repository_info returned, or {}."""
        return next((c for c in self.ok("repository_info") if isinstance(c, dict)), {})

    @property
    def files(self) -> list[str]:
        """Every path list_files returned, sorted."""
        listed = [p for c in self.ok("list_files") if isinstance(c, list) for p in c]
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
        found = [c for c in self.ok("code_outline") if _is_outline(c)]
        return sorted(found, key=_path)

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

    @property
    def searched(self) -> list[str]:
        """The queries search_code answered."""
        return [str(o.args.get("query")) for o in self.outcomes if o.name == "search_code" and o.ok]

    @property
    def hits(self) -> list[tuple[str, int, str]]:
        """Every (path, line, text) search_code returned, without repeats."""
        found = [h for c in self.ok("search_code") if isinstance(c, list) for h in c]
        matches = (_HIT.match(h) for h in found if isinstance(h, str))
        return list(dict.fromkeys((m["path"], int(m["line"]), m["text"]) for m in matches if m))


@dataclass(frozen=True)
class _Answer:
    summary: str
    body: list[str]
    next_actions: list[str]
    sources: list[str]
    found: bool
    """Whether the tools gave what this answer needed (it lowers the confidence if not)."""


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
            f"**Could not use:** {_names(ev.missing)} (not available to this agent), so what "
            "needs them is left out."
        )
    parts += answer.body
    actions = [*answer.next_actions, "Ask the chat assistant a follow-up question about the code."]
    parts.append(
        "## Next actions\n" + _bullets(actions[: max(2, min(4, len(answer.next_actions)))])
    )
    if answer.sources:
        parts.append("## Sources\n" + _bullets(f"`{s}`" for s in dict.fromkeys(answer.sources)))
    calls = sum(o.ok for o in ev.outcomes)
    confidence = (0.4 + 0.05 * min(calls, 10) if answer.found else 0.25) - 0.1 * len(ev.missing)
    parts.append(f"**Confidence:** {max(0.1, min(0.95, confidence)):.2f}")
    return "\n\n".join(parts) + "\n"


def _earlier_note(earlier: list[tuple[int, str, str]]) -> str:
    lines = []
    for step, agent, text in earlier:
        short = re.search(r"^\*\*In short:\*\*\s*(.+)$", text, re.MULTILINE)
        plain = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("#", "**"))]
        gist = short.group(1) if short else plain[0] if plain else "(no text)"
        lines.append(f"Building on step {step} ({agent}): {_clip(gist.strip(), 200)}")
    return "  \n".join(lines)


def _summarizer(ev: Evidence) -> _Answer:
    info, name, files = ev.info, ev.prompt.repository, ev.files
    if not (info or files):
        summary = f"I could not look inside `{name}`, so I cannot summarise it."
        return _Answer(summary, [], ["Allow `repository_info` or `list_files`."], [], False)
    count = info.get("file_count", len(files))
    languages = info.get("languages") or {}
    spread = ", ".join(f"{lang} ({n})" for lang, n in list(languages.items())[:5])
    tests = info.get("test_files", len(ev.tests))
    overview = f"`{name}` holds {_plural(count, 'file')}" + (f": {spread}" if spread else "")
    top = info.get("top_level") or sorted({f.split("/")[0] for f in files})
    entries = info.get("entry_points") or [f for f in files if f.endswith("__main__.py")]
    body = [
        f"## Overview\n{overview}. Test files: {tests}.",
        "## Layout\n" + (_bullets(f"`{entry}`" for entry in top[:20]) or "Empty."),
        "## Entry points\n" + (_bullets(f"`{e}`" for e in entries) or "None found."),
    ]
    title, paragraph = _readme_gist(ev)
    if paragraph:
        body.append(f"## What the README says\n**{title or ev.readme}**: {paragraph}")
    if ev.outlines:
        body.append("## Main modules\n" + _bullets(_module_line(o) for o in ev.outlines))
    by_size = sorted(ev.outlines, key=lambda o: (-len(_public(o)), _path(o)))
    main = [f"`{_path(o)}`" for o in by_size if _public(o)][:3]
    about = f" ({title}: {_clip(_first_sentence(paragraph), 120)})" if paragraph else ""
    where = f"; its main code is in {', '.join(main)}" if main else ""
    language = next(iter(languages), "mixed")
    summary = f"`{name}` holds {_plural(count, 'file')}, mostly {language}{about}{where}."
    actions = [f"Start reading at {main[0]}." if main else "Read the top-level files first."]
    actions += [f"Try the entry point `{entries[0]}`."] if entries else []
    actions.append(
        "Check that the README's usage section still matches the code."
        if paragraph
        else "Write a README that says what the project does and how to run it."
    )
    if tests < len(ev.sources):
        actions.append(f"Add tests: {_plural(tests, 'test file')} for {len(ev.sources)} modules.")
    sources = [ev.readme] if paragraph and ev.readme else []
    sources += [_path(o) for o in ev.outlines]
    sources += ["pyproject.toml"] if any(e.startswith("pyproject") for e in entries) else []
    return _Answer(summary, body, actions, sources or files[:5], True)


def _simplifier(ev: Evidence) -> _Answer:
    if not ev.outlines:
        summary = f"I found no Python code in `{ev.prompt.repository}` to simplify."
        return _Answer(summary, [], ["Point the simplifier at Python code."], [], False)
    ranked = sorted(
        ((_score(d), _path(o), d) for o in ev.outlines for d in o["definitions"]),
        key=lambda item: (-item[0], item[1], item[2]["line"]),
    )
    worth = [(s, p, d) for s, p, d in ranked if d["kind"] != "class" and _issues(d)][:10]
    files = _plural(len(ev.outlines), "file")
    functions = sum(d["kind"] != "class" for _, _, d in ranked)
    if not worth:
        summary = f"Nothing in the {files} is over 15 lines, 3 levels deep or has 5 parameters."
        actions = ["Keep functions this small as the code grows.", "Re-run after big changes."]
        return _Answer(summary, [], actions, [_path(o) for o in ev.outlines], True)
    rows = ["| Location | Symbol | Issue | Suggestion | Score |", "|---|---|---|---|---|"]
    for score, path, d in worth:
        cells = [f"{path}:{d['line']}", d["qualname"], "; ".join(_issues(d)), _suggest(d)]
        rows.append("| " + " | ".join(c.replace("|", "/") for c in cells) + f" | {score:.1f} |")
    _, path, top = worth[0]
    where = f"`{path}:{top['line']}`"
    detail = f"`{top['qualname']}` spans lines {top['line']}-{top['end_line']} of `{path}`"
    for block in _longest_blocks(top)[:1]:
        detail += (
            f"; its `{block['kind']}` block alone is lines {block['line']}-{block['end_line']}"
        )
    summary = (
        f"`{top['qualname']}` at {where} is the best candidate ({'; '.join(_issues(top))}); "
        f"{len(worth)} of the {functions} functions in {files} {'is' if len(worth) == 1 else 'are'}"
        " worth simplifying."
    )
    actions = [f"At {where}: {_suggest(top).split('; ')[0]}, with a test around it first."]
    actions += [f"Then simplify `{d['qualname']}` at `{p}:{d['line']}`." for _, p, d in worth[1:3]]
    actions.append("Re-run the simplifier to check that the scores went down.")
    sources = [f"{p}:{d['line']}" for _, p, d in worth]
    return _Answer(
        summary, ["## Suggestions\n" + "\n".join(rows), detail + "."], actions, sources, True
    )


def _score(d: _Def) -> float:
    return float(d["lines"] + 10 * d["max_depth"] + 4 * max(0, len(d["params"]) - 3))


def _issues(d: _Def) -> list[str]:
    issues = [f"{d['lines']} lines long"] if d["lines"] > 15 else []
    issues += [f"nested {d['max_depth']} levels deep"] if d["max_depth"] >= 3 else []
    return issues + ([f"{len(d['params'])} parameters"] if len(d["params"]) >= 5 else [])


def _longest_blocks(d: _Def) -> list[_Def]:
    return sorted(d["blocks"], key=lambda b: (b["line"] - b["end_line"], b["line"]))


def _suggest(d: _Def) -> str:
    stem = d["name"].strip("_")
    steps = [
        f"extract lines {b['line']}-{b['end_line']} (the `{b['kind']}` block) into a helper "
        f"`_{stem}_{_HELPER_SUFFIX.get(b['kind'], 'part')}`"
        for b in _longest_blocks(d)[:2]
    ]
    if d["max_depth"] >= 3:
        steps.append("flatten the nesting with early `continue`/`return`")
    if len(d["params"]) >= 5:
        group = ", ".join(f"`{p}`" for p in d["params"][1:])
        steps.append(f"group params {group} into a dataclass `{_pascal(stem)}Options`")
    return "; ".join(steps) or "split it into smaller named steps"


def _tester(ev: Evidence) -> _Answer:
    if not ev.outlines:
        summary = f"I found no Python modules in `{ev.prompt.repository}` to test."
        return _Answer(summary, [], ["Add code first, then tests."], [], False)
    used = set().union(*(_identifiers(ev.text_of(p)) for p in ev.tests))
    coverage, proposals, sources, untested_names = [], [], [], []
    for outline in ev.outlines:
        public = _public(outline)
        untested = [d for d in public if d["name"] not in used]
        tested = [d["name"] for d in public if d not in untested]
        if not public:
            continue
        missing = ", ".join(f"`{d['name']}` (line {d['line']})" for d in untested) or "nothing"
        coverage.append(
            f"`{_path(outline)}`: tested {_names(tested) or 'nothing'}; untested {missing}"
        )
        if untested:
            proposals.append(_test_file(ev, outline, untested))
            sources += [f"{_path(outline)}:{d['line']}" for d in untested]
            untested_names += [d["name"] for d in untested]
    body = ["## Coverage by name\n" + _bullets(coverage)] if coverage else []
    body += [f"**File:** `{path}`\n```python\n{text}```" for path, text in proposals]
    if untested_names:
        shown = _names(untested_names[:6]) + (", …" if len(untested_names) > 6 else "")
        summary = (
            f"{_plural(len(untested_names), 'public name')} no test mentions ({shown}); "
            f"I propose {_plural(len(proposals), 'test file')}."
        )
    else:
        summary = f"Every public function and class is mentioned in the {len(ev.tests)} test files."
    actions = (
        ["Run `pytest` on the proposed files and keep the tests that pass."] if proposals else []
    )
    actions += [
        f"Replace the TODO assertions in `{path}` with real values." for path, _ in proposals[:1]
    ]
    actions.append("Add edge cases (errors, empty input) for the functions already tested.")
    sources = [p for p in ev.tests if ev.text_of(p)] + sources
    return _Answer(summary, body, actions, sources or [_path(o) for o in ev.outlines], True)


def _identifiers(source: str) -> set[str]:
    """The names a test file uses in code (not in strings or comments)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # e.g. cut short by read_file's size cap
        return set(re.findall(r"[A-Za-z_]\w*", source))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    return names | {
        a.asname or a.name.split(".")[-1] for a in ast.walk(tree) if isinstance(a, ast.alias)
    }


def _test_file(ev: Evidence, outline: dict[str, Any], untested: list[_Def]) -> tuple[str, str]:
    """A pytest file for the `untested` names of one module: (path, text)."""
    module = _module_name(_path(outline))
    stem = module.rsplit(".", 1)[-1]
    path = (
        f"tests/test_{stem}.py"
        if f"tests/test_{stem}.py" not in ev.files
        else f"tests/test_{stem}_more.py"
    )
    inits = {
        d["qualname"].split(".")[0]: d for d in outline["definitions"] if d["name"] == "__init__"
    }
    cases = [_test_case(d, inits.get(d["name"])) for d in sorted(untested, key=lambda d: d["name"])]
    imports = ", ".join(sorted(d["name"] for d in untested))
    header = f'"""Tests for `{module}` that no test covered yet (proposed by the tester agent)."""'
    return path, f"{header}\n\nfrom {module} import {imports}\n\n\n" + "\n\n".join(cases)


def _test_case(d: _Def, init: _Def | None) -> str:
    is_class = d["kind"] == "class"
    signature = (init or {}).get("signature", "def __init__(self)") if is_class else d["signature"]
    try:
        node = ast.parse(signature + ": ...").body[0]
    except SyntaxError:
        node = ast.parse("def unknown(): ...").body[0]
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    is_async = isinstance(node, ast.AsyncFunctionDef)
    call = f"{'await ' if is_async else ''}{d['name']}({_sample_args(node.args)})"
    test = f"{'async ' if is_async else ''}def test_{_snake(d['name'])}() -> None:\n"
    if is_class:
        return test + f"    instance = {call}\n    assert isinstance(instance, {d['name']})\n"
    kind = ast.unparse(node.returns).split("[")[0].lower() if node.returns else ""
    check = {
        "none": "assert result is None",
        **{k: f"assert isinstance(result, {k})" for k in _SAMPLES},
    }
    todo = "" if kind == "none" else "  # TODO: assert the exact value"
    return test + f"    result = {call}\n    {check.get(kind, 'assert result is not None')}{todo}\n"


def _sample_args(args: ast.arguments) -> str:
    positional = [*args.posonlyargs, *args.args]
    required = positional[: len(positional) - len(args.defaults)]
    values = [_sample(a) for a in required if a.arg not in ("self", "cls")]
    keywords = zip(args.kwonlyargs, args.kw_defaults, strict=True)
    return ", ".join(values + [f"{a.arg}={_sample(a)}" for a, d in keywords if d is None])


def _sample(arg: ast.arg) -> str:
    kind = ast.unparse(arg.annotation).split("[")[0].split("|")[0] if arg.annotation else ""
    return _SAMPLES.get(kind.strip().lower(), "None")


def _documentation(ev: Evidence) -> _Answer:
    if not ev.outlines:
        summary = f"I found no Python modules in `{ev.prompt.repository}` to document."
        return _Answer(summary, [], ["Add Python modules, then document them."], [], False)
    _, paragraph = _readme_gist(ev)
    body = [f"# `{ev.prompt.repository}` reference" + (f"\n\n{paragraph}" if paragraph else "")]
    undocumented, count = [], 0
    for outline in ev.outlines:
        path, public = _path(outline), [d for d in outline["definitions"] if d["is_public"]]
        entries = [f"## `{_module_name(path)}` (`{path}`)"] if public else []
        for d in public:
            doc = d["docstring"] or "_No docstring._"
            entries.append(f"### `{d['qualname']}`\n```python\n{d['signature']}\n```\n{doc}")
            undocumented += [] if d["docstring"] else [f"`{path}:{d['line']}` `{d['qualname']}`"]
        count += len(public)
        body += ["\n\n".join(entries)] if entries else []
    if undocumented:
        body.append("## Undocumented public names\n" + _bullets(undocumented))
    summary = (
        f"Reference for {_plural(len(ev.outlines), 'module')} with {_plural(count, 'public name')}"
        f"; {len(undocumented)} of them {'has' if len(undocumented) == 1 else 'have'} no docstring."
    )
    actions = (
        [f"Add docstrings to the {len(undocumented)} undocumented names."] if undocumented else []
    )
    actions += ["Save this as `docs/reference.md` and link it from the README."]
    actions += ["Re-run the documentation agent after changing public signatures."]
    sources = [ev.readme] if paragraph and ev.readme else []
    return _Answer(summary, body, actions, sources + [_path(o) for o in ev.outlines], True)


def _convo_starter(ev: Evidence) -> _Answer:
    found = list(dict.fromkeys(_questions(ev)))[:6]
    for generic in (
        "What should a newcomer read first, and what is this repository for?",
        "Which part of the code changes most often, and is it the best tested?",
        "What would you like this repository to do that it does not do yet?",
    ):
        if len(found) < 3:
            found.append((generic, None))
    body = ["## Questions\n" + "\n".join(f"{i}. {q}" for i, (q, _) in enumerate(found, 1))]
    summary = f"{len(found)} questions about `{ev.prompt.repository}`, from what I read in it."
    actions = [
        "Answer the first question, then ask me to dig into that part.",
        "Run the tester or simplifier agent on what the questions point at.",
    ]
    sources = [s for _, s in found if s]
    return _Answer(summary, body, actions, sources, bool(ev.files or ev.info))


def _questions(ev: Evidence) -> Iterator[tuple[str, str | None]]:
    if query := ev.prompt.query.strip():
        yield f"You asked “{_clip(query, 120)}”: which part of the code should we start from?", None
    functions = [(_path(o), d) for o in ev.outlines for d in o["definitions"]]
    functions = [(p, d) for p, d in functions if d["kind"] != "class"]
    if functions:
        path, d = max(functions, key=lambda pd: (pd[1]["lines"], -pd[1]["line"]))
        where = f"{path}:{d['line']}"
        yield (
            (
                f"`{d['qualname']}` (`{where}`) is {d['lines']} lines long and nested "
                f"{d['max_depth']} levels deep: should we split it?"
            ),
            where,
        )
    tested = " ".join(PurePosixPath(t).stem for t in ev.tests)
    untested = [p for p in ev.sources if PurePosixPath(p).stem not in tested]
    untested = [p for p in untested if not p.endswith("__init__.py")]
    if untested:
        they = "it is" if len(untested) == 1 else "they are"
        yield f"No test file is named after {_names(untested[:3])}: how {they} tested?", untested[0]
    for path, line, text in ev.hits[:2]:
        yield f"`{path}:{line}` says “{_clip(text, 100)}”: is it still planned?", f"{path}:{line}"
    if readme := ev.text_of(ev.readme):
        headings = " ".join(re.findall(r"^#+ (.*)$", readme, re.MULTILINE)).lower()
        gaps = [
            s
            for s in ("Installation", "Usage", "Tests", "License")
            if s[:4].lower() not in headings
        ]
        if gaps:
            yield f"The README has no {', '.join(gaps)} section: should we add them?", ev.readme
    elif ev.info or ev.files:
        yield "There is no README I could read: what is this repository for?", None
    if ev.files and not ev.sources:
        yield (
            f"I found no Python code, only {_names(ev.files[:3])}: where is the code?",
            ev.files[0],
        )


def _chat_assistant(ev: Evidence) -> _Answer:
    words = ev.searched
    query = _clip(ev.prompt.query.strip(), 80)
    if not words and ev.info:
        top = _names(ev.info.get("top_level", [])[:8])
        summary = (
            f"Your question names nothing I could search for; `{ev.prompt.repository}` holds "
            f"{_plural(ev.info.get('file_count', 0), 'file')}, at the top: {top}."
        )
        actions = ["Ask again naming a function, class or file.", "Ask the summarizer for more."]
        return _Answer(summary, [], actions, [], False)
    if not ev.hits:
        searched = f" for {_names(words)}" if words else ""
        summary = (
            f"I searched `{ev.prompt.repository}`{searched} and found nothing matching “{query}”."
        )
        actions = [
            "Ask again naming a function, class or file.",
            "Ask the summarizer for an overview.",
        ]
        return _Answer(summary, [], actions, [], False)
    ranked = rank_hits(ev.hits, words)
    path, line, text = ranked[0]
    defined = [w for w in words if _defines(text, w)]
    best = f"`{defined[0]}` is defined at" if defined else "The best match is"
    body = [f"{best} `{path}:{line}`: `{_clip(text, 120)}`"]
    for read_path, start, snippet in ev.reads:
        fence = "```"
        while fence in snippet:
            fence += "`"
        end = start + snippet.rstrip("\n").count("\n")
        language = "python" if read_path.endswith(".py") else ""
        body.append(f"`{read_path}:{start}-{end}`\n{fence}{language}\n{snippet.rstrip()}\n{fence}")
    if others := [f"`{p}:{n}`: {_clip(t, 100)}" for p, n, t in ranked[1:8]]:
        body.append("Other matches:\n" + _bullets(others))
    in_files = _plural(len({h[0] for h in ev.hits}), "file")
    summary = f"Found {_names(words)} in {in_files}; {best[0].lower()}{best[1:]} `{path}:{line}`."
    actions = [f"Open `{path}:{line}` and read the whole function.", "Ask about another match."]
    return _Answer(summary, body, actions, [f"{p}:{n}" for p, n, _ in ranked[:8]], True)


def rank_hits(hits: list[tuple[str, int, str]], words: list[str]) -> list[tuple[str, int, str]]:
    """Search hits best first: definitions of the words, then code that is not a test."""

    def rank(hit: tuple[str, int, str]) -> int:
        path, _, text = hit
        defines = any(_defines(text, w) for w in words)
        return 4 * defines + 2 * (not is_test_path(path)) + path.endswith(".py")

    return sorted(hits, key=rank, reverse=True)


def _defines(line: str, word: str) -> bool:
    return re.search(rf"\b(def|class)\s+{re.escape(word)}\b", line, re.IGNORECASE) is not None


_COMPOSERS: dict[AgentType, Callable[[Evidence], _Answer]] = {
    AgentType.SUMMARIZER: _summarizer,
    AgentType.SIMPLIFIER: _simplifier,
    AgentType.TESTER: _tester,
    AgentType.DOCUMENTATION: _documentation,
    AgentType.CONVO_STARTER: _convo_starter,
    AgentType.CHAT_ASSISTANT: _chat_assistant,
}


def _readme_gist(ev: Evidence) -> tuple[str, str]:
    """The README's title and first paragraph (headings, code and images left out)."""
    text = ev.text_of(ev.readme)
    title = next((ln[2:].strip() for ln in text.splitlines() if ln.startswith("# ")), "")
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.strip().splitlines()]
        if lines and not lines[0].startswith(("#", "```", "<", "!", "[", "|", "---")):
            return title, " ".join(lines)
    return title, ""


def _public(outline: dict[str, Any]) -> list[_Def]:
    """The public top-level functions and classes of a module."""
    return [d for d in outline["definitions"] if d["is_public"] and d["kind"] != "method"]


def _module_line(outline: dict[str, Any]) -> str:
    public = _public(outline)
    names = ", ".join(f"`{d['name']}` (line {d['line']})" for d in public[:8])
    more = f" and {len(public) - 8} more" if len(public) > 8 else ""
    return f"`{_path(outline)}` ({outline['lines']} lines): {names or 'no public names'}{more}"


def _module_name(path: str) -> str:
    parts = list(PurePosixPath(path).with_suffix("").parts)
    parts = parts[1:] if parts[0] == "src" and len(parts) > 1 else parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def _is_outline(value: object) -> bool:
    """Whether `value` is a Python outline as `tools.code_outline` returns it (MCP tools differ)."""
    if not isinstance(value, dict) or not isinstance(value.get("definitions"), list):
        return False
    return all(isinstance(d, dict) and _DEF_KEYS <= d.keys() for d in value["definitions"])


def _path(outline: dict[str, Any]) -> str:
    return str(outline["path"])


def _bullets(items: Iterator[str] | list[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def _names(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part)


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()
