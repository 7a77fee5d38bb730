"""The proposed test files: the best cases for the most important untested names.

Each file is checked to parse and to import only names its module has.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import PurePosixPath

from woolly_grpc.core._outline import parse_python

from .catalog import Catalog, Unit
from .proposals import Case, propose, skeleton

_MAX_CASES = 12
_MAX_SKELETONS = 3
_MAX_FILES = 4
_LOOK_AT = 400
"""How far down the ranked list to look for names the code itself says how to test."""


def proposed_files(
    catalog: Catalog, untested: list[Unit], doctests_run: bool, files: list[str], tests: list[str]
) -> list[tuple[str, str, list[str]]]:
    """(path, text, kinds of its cases) of each proposed test file, most important first."""
    chosen: dict[str, list[Case]] = {}
    callable_ = [u for u in untested if u.kind != "property"][:_LOOK_AT]
    total, backed = 0, set[tuple[str, str]]()
    for unit in callable_:
        if total >= _MAX_CASES or (unit.module not in chosen and len(chosen) >= _MAX_FILES):
            continue
        cases = propose(catalog, unit, doctests_run)[:2]
        if cases:
            chosen.setdefault(unit.module, []).extend(cases)
            total, backed = total + len(cases), backed | {unit.key}
    # The most important names that nothing in the code backs get a skeleton to fill in.
    left = [u for u in callable_ if u.key not in backed and u.kind != "class"]
    for unit in [u for u in left if u.module in chosen or len(chosen) < _MAX_FILES][
        :_MAX_SKELETONS
    ]:
        chosen.setdefault(unit.module, []).append(skeleton(unit))
    folder = _test_folder(tests)
    made = []
    for module, cases in chosen.items():
        text = _file_text(catalog, module, cases)
        if text is None:
            continue
        stem = module.rsplit(".", 1)[-1].strip("_") or "package"
        path = f"{folder}/test_{stem}.py"
        path = path if path not in files else f"{folder}/test_{stem}_more.py"
        made.append((path, text, [c.kind for c in cases]))
    return made


def _file_text(catalog: Catalog, module: str, cases: list[Case]) -> str | None:
    """The whole file, or None when it would not parse or would import a missing name."""
    cases = list({c.name: c for c in cases}.values())
    names = sorted(
        {n for c in cases for n in c.imports},
        key=lambda n: (not n[:1].isupper(), n.lower()),
    )
    if not all(catalog.lookup(module, n) or _bound(catalog, module, n) for n in names):
        return None
    head = (
        f'"""Proposed tests for `{module}`: names no test refers to yet (by the tester agent)."""'
    )
    imports = ["import pytest"] if any("pytest." in c.text for c in cases) else []
    from_line = f"from {module} import {', '.join(names)}" if names else ""
    blocks = [head, "\n".join(imports), from_line]
    text = "\n\n".join(b for b in blocks if b) + "\n\n\n" + "\n\n".join(c.text for c in cases)
    try:
        parse_python(text)
    except SyntaxError:
        return None
    return text


def _bound(catalog: Catalog, module: str, name: str) -> bool:
    found = catalog.modules.get(module)
    return found is not None and (name in found.imports or name in found.aliases)


def _test_folder(tests: list[str]) -> str:
    """The folder most test files are in, `tests` if there are none."""
    folders = Counter(str(PurePosixPath(p).parent) for p in tests if "/" in p)
    return folders.most_common(1)[0][0] if folders else "tests"


def imported_names(text: str) -> list[tuple[str, str]]:
    """(module, name) of every `from module import name` of a file (for checks)."""
    return [
        (node.module or "", alias.name)
        for node in ast.walk(parse_python(text))
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    ]
