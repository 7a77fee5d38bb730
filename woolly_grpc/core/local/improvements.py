"""The local answers that propose changes: the simplifier's and the tester's."""

from __future__ import annotations

import ast
import re
from typing import Any

from woolly_grpc.core._outline import parse_python

from .evidence import Definition, Evidence, module_name, outline_path, public_definitions
from .markdown import Answer, bullets, names, plural

_SAMPLE_VALUES = {
    "int": "2", "float": "2.0", "str": '"text"', "bool": "True", "bytes": 'b"data"',
    "list": "[]", "dict": "{}", "tuple": "()", "set": "set()",
}  # fmt: skip
"""A value to call a function with, by parameter annotation; also the checkable return types."""
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


def tester(ev: Evidence) -> Answer:
    """Which public names no test mentions, and a proposed pytest file for each module."""
    if not ev.outlines:
        summary = f"I found no Python modules in `{ev.prompt.repository}` to test."
        return Answer(summary, [], ["Add code first, then tests."], [], False)
    used = set().union(*(_identifiers(ev.text_of(p)) for p in ev.tests))
    coverage, proposals, sources, untested_names = [], [], [], []
    for outline in ev.outlines:
        public = public_definitions(outline)
        if not public:
            continue
        untested = [d for d in public if d["name"] not in used]
        tested = [d["name"] for d in public if d not in untested]
        missing = ", ".join(f"`{d['name']}` (line {d['line']})" for d in untested) or "nothing"
        coverage.append(
            f"`{outline_path(outline)}`: tested {names(tested) or 'nothing'}; untested {missing}"
        )
        if untested:
            proposals.append(_test_file(ev, outline, untested))
            sources += [f"{outline_path(outline)}:{d['line']}" for d in untested]
            untested_names += [d["name"] for d in untested]
    body = ["## Coverage by name\n" + bullets(coverage)] if coverage else []
    body += [f"**File:** `{path}`\n```python\n{text}```" for path, text in proposals]
    if untested_names:
        shown = names(untested_names[:6]) + (", …" if len(untested_names) > 6 else "")
        summary = (
            f"{plural(len(untested_names), 'public name')} no test mentions ({shown}); "
            f"I propose {plural(len(proposals), 'test file')}."
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
    return Answer(summary, body, actions, sources or [outline_path(o) for o in ev.outlines], True)


def _identifiers(source: str) -> set[str]:
    """The names a test file uses in code (not in strings or comments)."""
    try:
        tree = parse_python(source)
    except SyntaxError:  # e.g. cut short by read_file's size cap
        return set(re.findall(r"[A-Za-z_]\w*", source))
    found = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    found |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    return found | {
        a.asname or a.name.split(".")[-1] for a in ast.walk(tree) if isinstance(a, ast.alias)
    }


def _test_file(
    ev: Evidence, outline: dict[str, Any], untested: list[Definition]
) -> tuple[str, str]:
    """A pytest file for the `untested` names of one module: (path, text)."""
    module = module_name(outline_path(outline))
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


def _test_case(d: Definition, init: Definition | None) -> str:
    is_class = d["kind"] == "class"
    signature = (init or {}).get("signature", "def __init__(self)") if is_class else d["signature"]
    try:
        node = parse_python(signature + ": ...").body[0]
    except SyntaxError:
        node = parse_python("def unknown(): ...").body[0]
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    is_async = isinstance(node, ast.AsyncFunctionDef)
    call = f"{'await ' if is_async else ''}{d['name']}({_sample_args(node.args)})"
    test = f"{'async ' if is_async else ''}def test_{_snake(d['name'])}() -> None:\n"
    if is_class:
        return test + f"    instance = {call}\n    assert isinstance(instance, {d['name']})\n"
    kind = ast.unparse(node.returns).split("[")[0].lower() if node.returns else ""
    check = {
        "none": "assert result is None",
        **{k: f"assert isinstance(result, {k})" for k in _SAMPLE_VALUES},
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
    return _SAMPLE_VALUES.get(kind.strip().lower(), "None")


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part)


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()
