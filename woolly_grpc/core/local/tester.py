"""The tester's answer: which public names the tests exercise, and where.

Then which they do not (ranked), and proposed tests for the most important of those.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from woolly_grpc.core._outline import parse_python
from woolly_grpc.core.tools import is_test_path

from .catalog import Catalog, Key, Unit, build_catalog
from .doctests import (
    docstring_examples,
    doctest_scope,
    examples,
    runs_doctests,
    setup_blocks,
    snippet,
)
from .evidence import Evidence
from .markdown import Answer, plural
from .references import Code, Reference, find_references
from .testfiles import proposed_files

_NOT_SOURCES = frozenset({"docs", "doc", "examples", "example", "scripts", "benchmarks", "bench"})
_CONFIGS = ("pyproject.toml", "setup.cfg", "tox.ini", "pytest.ini", "noxfile.py", "Makefile")
_TEST_DIRS = frozenset({"tests", "test", "testing"})
_KIND_WEIGHT = {"function": 1.0, "class": 1.0, "method": 0.6, "property": 0.3}
_SHOWN_UNTESTED = 24
_TESTED_BUDGET = 4500
_TAGS = {
    "doctest": "doctest", "test named": "test name", "parametrize": "parametrize table",
    "likely": "method, receiver inferred", "getattr": "getattr", "imported": "import only",
}  # fmt: skip
"""Short words for the references that are not a plain use or call in test code."""


def is_test_code(path: str) -> bool:
    """Whether a Python file is test code: a test file, a conftest, or under a tests folder."""
    parts = PurePosixPath(path).parts
    return is_test_path(path) or parts[-1] == "conftest.py" or bool(_TEST_DIRS & set(parts[:-1]))


def planned_reads(files: list[str]) -> list[str]:
    """What the tester reads whole: sources, test code, test configuration and documents."""
    python = [p for p in files if p.endswith(".py")]
    tests = [p for p in python if is_test_code(p)]
    sources = [
        p
        for p in python
        if p not in tests and PurePosixPath(p).parts[0] not in _NOT_SOURCES
        if PurePosixPath(p).name not in ("setup.py", "noxfile.py", "conftest.py")
    ]
    configs = [p for p in files if p in _CONFIGS or p in ("docs/conf.py", "doc/conf.py")]
    docs = [
        p
        for p in files
        if p.endswith((".rst", ".md")) and (p.startswith(("docs/", "doc/")) or "/" not in p)
    ]
    # At most ~140 reads: with list_files and a few read-ons that stays under the service's
    # default limit of 200 tool calls a run.
    return sources[:80] + tests[:50] + configs[:6] + sorted(docs, key=lambda p: p.count("/"))[:6]


@dataclass
class Assessment:
    """What the tester found, before it is written up."""

    catalog: Catalog
    references: dict[Key, Reference]
    scored: list[Unit]
    """The public names that count: not exceptions, not entry points."""
    untested: list[Unit]
    """The scored names no test refers to, most important first."""
    apart: list[Unit]
    doctests: tuple[bool, bool]
    tests: list[str]


def assess(ev: Evidence) -> Assessment | None:
    """Read the sources and the tests back from the tool results; None without sources."""
    files = ev.files
    reads = planned_reads(files)
    texts = {p: t for p in reads if (t := ev.full_text(p)) is not None}
    tests = [p for p in texts if p.endswith(".py") and is_test_code(p)]
    configs = _config_paths(reads)
    sources = {p: t for p, t in texts.items() if p.endswith(".py")}
    sources = {p: t for p, t in sources.items() if p not in tests and p not in configs}
    if not sources:
        return None
    doctests = runs_doctests([texts.get(p, "") for p in [*configs, *tests]])
    catalog = build_catalog(sources, texts.get("pyproject.toml", ""))
    pieces = [Code(p, tree) for p in tests if (tree := _parse(texts[p])) is not None]
    if doctests[0]:
        run = set(doctest_scope([texts.get(p, "") for p in [*configs, *tests]], [*catalog.modules]))
        for module in (m for m in catalog.modules.values() if m.name in run):
            nodes = [module.tree, *(u.node for u in module.units.values())]
            found = [(e.line, e.source) for n in nodes for e in docstring_examples(n)]
            if found:
                pieces.append(Code(module.path, snippet(found), module=module.name))
    if doctests[1]:
        for path in texts:
            if path.endswith((".rst", ".md")):
                found = setup_blocks(texts[path]) + [
                    (e.line, e.source) for e in examples(texts[path])
                ]
                pieces.append(Code(path, snippet(found)))
    references = find_references(catalog, pieces)
    public = catalog.public()
    scored = [u for u in public if not (u.is_exception or u.is_entry)]
    untested = sorted((u for u in scored if u.key not in references), key=_rank)
    apart = [u for u in public if u.is_exception or u.is_entry]
    return Assessment(catalog, references, scored, untested, apart, doctests, tests)


def tester(ev: Evidence) -> Answer:
    """Which public names the tests exercise and which they do not, with proposed tests."""
    found = assess(ev)
    if found is None:
        summary = f"I found no Python modules in `{ev.prompt.repository}` to test."
        return Answer(summary, [], ["Add code first, then tests."], [], False)
    untested, scored = found.untested, found.scored
    files = proposed_files(found.catalog, untested, found.doctests[0], ev.files, found.tests)
    body = [_untested_section(found), _tested_section(found)]
    body += [f"**File:** `{path}`\n```python\n{text}```" for path, text, _ in files]
    cases = [kind for _, _, kinds in files for kind in kinds]
    if untested:
        top = ", ".join(f"`{u.qualname}`" for u in untested[:3])
        summary = (
            f"{len(untested)} of {len(scored)} public names have no test that refers to them "
            f"(most important: {top}); {len(scored) - len(untested)} are tested, each with "
            f"the line that shows it. I propose {plural(len(cases), 'test')} in "
            f"{plural(len(files), 'file')} ({_kinds(cases)})."
        )
    else:
        summary = (
            f"All {len(scored)} public names are referred to by the "
            f"{plural(len(found.tests), 'test file')}; the list below says where."
        )
    actions = [f"Run `pytest {files[0][0]}` and fill in the skipped skeletons."] if files else []
    actions += [f"Test `{u.qualname}` next (`{u.path}:{u.node.lineno}`)." for u in untested[:2]]
    actions.append("Add edge cases (errors, empty input) for the functions already tested.")
    sources = found.tests[:8] + [f"{u.path}:{u.node.lineno}" for u in untested[:8]]
    return Answer(summary, body, actions, sources, True)


def _untested_section(found: Assessment) -> str:
    untested = found.untested
    if not untested:
        return "## Untested\nNothing: every public name is referred to by a test."
    shown = untested[:_SHOWN_UNTESTED]
    lines = [
        "## Untested, most important first",
        "Ranked by kind (functions and classes before methods), size and how often the package "
        "itself calls them.",
    ]
    for path in dict.fromkeys(u.path for u in shown):
        here = [u for u in untested if u.path == path]
        listed = [u for u in shown if u.path == path]
        lines.append(f"\n**`{path}`** ({len(here)} untested)")
        lines += [f"- {_describe(u)}" for u in listed]
        if len(here) > len(listed):
            lines.append(f"- … and {len(here) - len(listed)} more in this module")
    rest = [u for u in untested if u.path not in {s.path for s in shown}]
    if rest:
        counts = {p: sum(u.path == p for u in rest) for p in dict.fromkeys(u.path for u in rest)}
        where = ", ".join(f"`{p}` ({n})" for p, n in list(counts.items())[:10])
        more = ", …" if len(counts) > 10 else ""
        modules = plural(len(counts), "other module")
        lines.append(f"\n… and {len(rest)} more in {modules}: {where}{more}.")
    if found.apart:
        errors = sum(u.is_exception for u in found.apart)
        kinds = [f"{errors} exception {'class' if errors == 1 else 'classes'}"] if errors else []
        entries = [u for u in found.apart if u.is_entry]
        kinds += [f"{plural(len(entries), 'entry point')} ({_code(entries)})"] if entries else []
        lines.append(f"\nSet apart, not counted: {' and '.join(kinds)}.")
    return "\n".join(lines)


def _tested_section(found: Assessment) -> str:
    tested = [u for u in found.scored if u.key in found.references]
    if not tested:
        return "## Tested\nNo public name is referred to by a test."
    lines = [
        "## Tested, and the first line that shows it",
        "By module, then by the file of the reference: `name` line (how, when not a plain use).",
    ]
    size, left = 0, 0
    for path in dict.fromkeys(u.path for u in tested):
        here = [u for u in tested if u.path == path]
        by_file: dict[str, list[str]] = {}
        for unit in here:
            ref = found.references[unit.key]
            by_file.setdefault(ref.path, []).append(_evidence(unit, ref))
        groups = [f"{PurePosixPath(f).name} " + ", ".join(c) for f, c in by_file.items()]
        line = f"- `{path}`: " + "; ".join(groups)
        if size + len(line) > _TESTED_BUDGET:
            left += len(here)
            continue
        size += len(line)
        lines.append(line)
    if left:
        lines.append(f"- … and {left} more tested names in other modules (ask about one by name).")
    return "\n".join(lines)


def _evidence(unit: Unit, ref: Reference) -> str:
    tag = next((t for key, t in _TAGS.items() if key in ref.how), "")
    return f"`{unit.qualname}` {ref.line}" + (f" ({tag})" if tag else "")


def _code(units: list[Unit]) -> str:
    shown = ", ".join(f"`{u.qualname}`" for u in units[:4])
    return shown + (", …" if len(units) > 4 else "")


def _describe(unit: Unit) -> str:
    others = unit.fan_in
    calls = f", named {plural(others, 'time')} elsewhere in the package" if others > 0 else ""
    return f"`{unit.qualname}` ({unit.kind}, line {unit.node.lineno}, {unit.lines} lines{calls})"


def _rank(unit: Unit) -> tuple[float, str, int]:
    score = _KIND_WEIGHT[unit.kind] * (min(unit.lines, 80) + 6 * min(unit.fan_in, 10))
    return -score, unit.path, unit.node.lineno


def _kinds(cases: list[str]) -> str:
    labels: dict[str, Callable[[int], str]] = {
        "example": lambda n: f"{n} from docstring examples",
        "raises": lambda n: f"{n} from the code's own `raise` checks",
        "skeleton": lambda n: f"{n} marked skeletons",
    }
    return ", ".join(labels[k](cases.count(k)) for k in labels if cases.count(k)) or "none"


def _config_paths(reads: list[str]) -> list[str]:
    return [p for p in reads if p in _CONFIGS or p.endswith("/conf.py")]


def _parse(text: str) -> ast.Module | None:
    try:
        return parse_python(text)
    except (SyntaxError, ValueError):
        return None
