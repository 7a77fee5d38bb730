"""The local answers for a conversation: the convo starter's questions and the chat assistant's."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PurePosixPath

from .evidence import Evidence, defines, outline_path, rank_hits
from .markdown import Answer, bullets, clip, names, plural

_GENERIC_QUESTIONS = (
    "What should a newcomer read first, and what is this repository for?",
    "Which part of the code changes most often, and is it the best tested?",
    "What would you like this repository to do that it does not do yet?",
)
"""Asked when what the tools returned suggests fewer than three questions."""


def convo_starter(ev: Evidence) -> Answer:
    """Three to six questions about the repository, each pointing at what prompted it."""
    found = list(dict.fromkeys(_questions(ev)))[:6]
    found += [(question, None) for question in _GENERIC_QUESTIONS[: max(0, 3 - len(found))]]
    body = ["## Questions\n" + "\n".join(f"{i}. {q}" for i, (q, _) in enumerate(found, 1))]
    summary = f"{len(found)} questions about `{ev.prompt.repository}`, from what I read in it."
    actions = [
        "Answer the first question, then ask me to dig into that part.",
        "Run the tester or simplifier agent on what the questions point at.",
    ]
    sources = [s for _, s in found if s]
    return Answer(summary, body, actions, sources, bool(ev.files or ev.info))


def _questions(ev: Evidence) -> Iterator[tuple[str, str | None]]:
    """(question, source) pairs, drawn from the query, the outlines, the tests and the README."""
    if query := ev.prompt.query.strip():
        yield f"You asked “{clip(query, 120)}”: which part of the code should we start from?", None
    functions = [(outline_path(o), d) for o in ev.outlines for d in o["definitions"]]
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
        yield f"No test file is named after {names(untested[:3])}: how {they} tested?", untested[0]
    for path, line, text in ev.hits[:2]:
        yield f"`{path}:{line}` says “{clip(text, 100)}”: is it still planned?", f"{path}:{line}"
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
            f"I found no Python code, only {names(ev.files[:3])}: where is the code?",
            ev.files[0],
        )


def chat_assistant(ev: Evidence) -> Answer:
    """Where the names in the question are defined and used, with the code around them."""
    words = ev.searched
    query = clip(ev.prompt.query.strip(), 80)
    if not words and ev.info:
        top = names(ev.info.get("top_level", [])[:8])
        summary = (
            f"Your question names nothing I could search for; `{ev.prompt.repository}` holds "
            f"{plural(ev.info.get('file_count', 0), 'file')}, at the top: {top}."
        )
        actions = ["Ask again naming a function, class or file.", "Ask the summarizer for more."]
        return Answer(summary, [], actions, [], False)
    if not ev.hits:
        searched = f" for {names(words)}" if words else ""
        summary = (
            f"I searched `{ev.prompt.repository}`{searched} and found nothing matching “{query}”."
        )
        actions = [
            "Ask again naming a function, class or file.",
            "Ask the summarizer for an overview.",
        ]
        return Answer(summary, [], actions, [], False)
    ranked = rank_hits(ev.hits, words)
    path, line, text = ranked[0]
    defined = [w for w in words if defines(text, w)]
    best = f"`{defined[0]}` is defined at" if defined else "The best match is"
    body = [f"{best} `{path}:{line}`: `{clip(text, 120)}`"]
    for read_path, start, snippet in ev.reads:
        fence = "```"
        while fence in snippet:
            fence += "`"
        end = start + snippet.rstrip("\n").count("\n")
        language = "python" if read_path.endswith(".py") else ""
        body.append(f"`{read_path}:{start}-{end}`\n{fence}{language}\n{snippet.rstrip()}\n{fence}")
    if others := [f"`{p}:{n}`: {clip(t, 100)}" for p, n, t in ranked[1:8]]:
        body.append("Other matches:\n" + bullets(others))
    in_files = plural(len({h[0] for h in ev.hits}), "file")
    summary = f"Found {names(words)} in {in_files}; {best[0].lower()}{best[1:]} `{path}:{line}`."
    actions = [f"Open `{path}:{line}` and read the whole function.", "Ask about another match."]
    return Answer(summary, body, actions, [f"{p}:{n}" for p, n, _ in ranked[:8]], True)
