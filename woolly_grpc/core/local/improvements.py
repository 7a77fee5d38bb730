"""The simplifier's answer: the functions most worth simplifying, each with a concrete way.

(The tester, which proposes tests, is in `tester.py`.)
"""

from __future__ import annotations

from .evidence import Definition, Evidence, outline_path
from .markdown import Answer, plural

_HELPER_SUFFIX = {"for": "item", "while": "step", "if": "case", "try": "attempt"}


def simplifier(ev: Evidence) -> Answer:
    """The longest, deepest and widest functions, each with a concrete way to simplify it."""
    if not ev.outlines:
        summary = f"I found no Python code in `{ev.prompt.repository}` to simplify."
        return Answer(summary, [], ["Point the simplifier at Python code."], [], False)
    ranked = sorted(
        ((_score(d), outline_path(o), d) for o in ev.outlines for d in o["definitions"]),
        key=lambda item: (-item[0], item[1], item[2]["line"]),
    )
    worth = [(s, p, d) for s, p, d in ranked if d["kind"] != "class" and _issues(d)][:10]
    files = plural(len(ev.outlines), "file")
    functions = sum(d["kind"] != "class" for _, _, d in ranked)
    if not worth:
        summary = f"Nothing in the {files} is over 15 lines, 3 levels deep or has 5 parameters."
        actions = ["Keep functions this small as the code grows.", "Re-run after big changes."]
        return Answer(summary, [], actions, [outline_path(o) for o in ev.outlines], True)
    rows = ["| Location | Symbol | Issue | Suggestion | Score |", "|---|---|---|---|---|"]
    for score, path, d in worth:
        cells = [f"{path}:{d['line']}", d["qualname"], "; ".join(_issues(d)), _suggest(d)]
        rows.append("| " + " | ".join(c.replace("|", "/") for c in cells) + f" | {score:.1f} |")
    _, path, top = worth[0]
    where = f"`{path}:{top['line']}`"
    detail = f"`{top['qualname']}` spans lines {top['line']}-{top['end_line']} of `{path}`"
    if blocks := _longest_blocks(top):
        block = blocks[0]
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
    return Answer(
        summary, ["## Suggestions\n" + "\n".join(rows), detail + "."], actions, sources, True
    )


def _score(d: Definition) -> float:
    return float(d["lines"] + 10 * d["max_depth"] + 4 * max(0, len(d["params"]) - 3))


def _issues(d: Definition) -> list[str]:
    issues = [f"{d['lines']} lines long"] if d["lines"] > 15 else []
    issues += [f"nested {d['max_depth']} levels deep"] if d["max_depth"] >= 3 else []
    return issues + ([f"{len(d['params'])} parameters"] if len(d["params"]) >= 5 else [])


def _longest_blocks(d: Definition) -> list[Definition]:
    return sorted(d["blocks"], key=lambda b: (b["line"] - b["end_line"], b["line"]))


def _suggest(d: Definition) -> str:
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


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part)
