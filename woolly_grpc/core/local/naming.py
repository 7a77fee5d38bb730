"""References that rest on names rather than on what a name is bound to.

A method called on an object of unknown class, a name written as a string in a parametrize
table, and a test named after what it tests (`test_slugify`, `SlugifyTests`).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

from .catalog import BUILTIN_METHODS, Catalog, Unit

Found = tuple[Unit, int, str]
"""A unit, the line that names it, and how."""


def by_receiver(
    catalog: Catalog, nodes: list[ast.Attribute], in_play: set[Unit]
) -> Iterable[Found]:
    """`x.method()` where `x` is unknown: a method of a class this file works with."""
    classes = [u for u in in_play if u.kind == "class"]
    for node in nodes:
        if node.attr in BUILTIN_METHODS:
            continue
        for cls in classes:
            for unit in catalog.attribute(cls, node.attr):
                how = f"`.{node.attr}` on what is likely a `{cls.qualname}`"
                yield unit, node.lineno, how


def by_parametrize_strings(
    catalog: Catalog, tree: ast.Module, modules: set[str]
) -> Iterable[Found]:
    """`"slugify"` in a parametrize table, in a file that imports its module."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and "parametrize" in ast.unparse(node.func)):
            continue
        table = ast.Module(body=[ast.Expr(a) for a in node.args[1:]], type_ignores=[])
        for const in ast.walk(table):
            if isinstance(const, ast.Constant) and isinstance(const.value, str):
                for module in modules:
                    for unit in _units(catalog.attr(module, const.value)):
                        how = f'"{const.value}" in a parametrize table'
                        yield unit, const.lineno, how


def by_test_names(
    catalog: Catalog, path: str, tree: ast.Module, modules: set[str]
) -> Iterable[Found]:
    """`test_slugify` or `SlugifyTests`, in a file about the module.

    That is a file named after the module, or one that imports the module itself (a package's
    `__init__` re-exports too much to say what a test's name is about).
    """
    stem = path.rsplit("/", 1)[-1].removesuffix(".py")
    named = stem.removeprefix("test_").removesuffix("_test")
    modules = {
        m
        for m in modules
        if m in catalog.modules and not catalog.modules[m].path.endswith("__init__.py")
    }
    modules |= {m for m in catalog.modules if m.rsplit(".", 1)[-1] == named}
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for word in _subjects(node.name):
            for module in modules:
                for unit in _units(catalog.attr(module, word)):
                    if unit.kind in ("function", "class"):
                        how = f"test named `{node.name}`"
                        yield unit, node.lineno, how


def _units(values: Iterable[object]) -> list[Unit]:
    return [v for v in values if isinstance(v, Unit)]


def _subjects(name: str) -> list[str]:
    """The names a test's name may be about: `test_slugify_unicode` -> slugify_unicode, slugify."""
    if name.startswith("test_"):
        words = name[5:].split("_")
    elif name.startswith("Test") or name.endswith(("Test", "Tests")):
        core = re.sub(r"^Test|Tests?$", "", name)
        snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", core).lower()
        return [core, snake] if core else []
    else:
        return []
    return ["_".join(words[:n]) for n in range(len(words), 0, -1) if words[n - 1]]
