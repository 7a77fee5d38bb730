"""The package under test, read with `ast`: its modules, their public names and their namespaces.

The tester's unit is a *public name*: a function or class defined at module level (also inside
a module-level `if`/`try`), or a method of a public class, whose name and module path have no
leading underscore. Exceptions and entry points are kept apart from the callables worth testing.
"""

from __future__ import annotations

import ast
import builtins
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from woolly_grpc.core._outline import parse_python

from .evidence import module_name

Key = tuple[str, str]
"""(dotted module, qualname) of one public name."""

_DefNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
_EXCEPTIONS = frozenset(
    n for n in dir(builtins) if isinstance(getattr(builtins, n), type)
    and issubclass(getattr(builtins, n), BaseException)
)  # fmt: skip
BUILTIN_METHODS = frozenset(
    name
    for kind in (dict, list, set, str, bytes, io.BytesIO, io.StringIO, object)
    for name in dir(kind)
)
"""Method names too common to pin on a package class without knowing the receiver."""
_ERROR_NAME = re.compile(r"(Error|Exception|Warning|Exit)$")
_SCRIPT = re.compile(r"""^\s*[\w.-]+\s*=\s*["']([\w.]+):([\w.]+)["']""", re.MULTILINE)


@dataclass(eq=False)
class Unit:
    """One definition of the package."""

    module: str
    path: str
    qualname: str
    kind: str
    """`function`, `class`, `method` or `property`."""
    node: _DefNode
    public: bool
    is_exception: bool = False
    is_entry: bool = False
    fan_in: int = 0
    """How often the package's own code names it (outside its definition)."""

    @property
    def key(self) -> Key:
        """This unit's key."""
        return self.module, self.qualname

    @property
    def name(self) -> str:
        """The last part of the qualname."""
        return self.qualname.rsplit(".", 1)[-1]

    @property
    def lines(self) -> int:
        """How many lines the definition spans."""
        return (self.node.end_lineno or self.node.lineno) - self.node.lineno + 1


@dataclass(frozen=True)
class Instance:
    """An object of a package class, as far as the code shows."""

    cls: Unit


Target = str | Unit | Instance
"""What a name can refer to: a module of the package (its dotted name), a definition, or an
object of one of its classes."""


@dataclass
class Module:
    """One module of the package and the names its own code can see."""

    name: str
    path: str
    tree: ast.Module
    units: dict[str, Unit] = field(default_factory=dict)
    """Every definition (public or not) by qualname."""
    imports: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Local name -> ("module", dotted) or ("name", "dotted.module:name") bound by imports."""
    stars: list[str] = field(default_factory=list)
    """Modules this one re-exports with `from x import *`."""
    aliases: dict[str, ast.expr] = field(default_factory=dict)
    """Module-level `name = other.name` or `name = SomeClass(...)` assignments."""


@dataclass
class Catalog:
    """Every module of the package under test."""

    modules: dict[str, Module]
    units: dict[Key, Unit]

    def public(self) -> list[Unit]:
        """The public names, in path and line order."""
        return sorted(
            (u for u in self.units.values() if u.public),
            key=lambda u: (u.path, u.node.lineno, u.qualname),
        )

    def lookup(self, module: str, name: str, depth: int = 0) -> list[Target]:
        """What `name` means in `module`'s own namespace: its definitions, imports, star imports."""
        found = self.modules.get(module)
        if found is None or depth > 4:
            return []
        if name in found.units:
            return [found.units[name]]
        if name in found.aliases:
            return self._value_in(module, found.aliases[name], depth + 1)
        kind, target = found.imports.get(name, ("", ""))
        if kind == "module":
            return [target]
        if kind == "name":
            source, _, attr = target.partition(":")
            return self.attr(source, attr, depth + 1)
        for star in found.stars:
            if hit := self.lookup(star, name, depth + 1):
                return hit
        return []

    def attr(self, target: Target, name: str, depth: int = 0) -> list[Target]:
        """What `target.name` means: a submodule, a module's member or a class's member."""
        if isinstance(target, str):
            submodule = f"{target}.{name}"
            return [submodule] if submodule in self.modules else self.lookup(target, name, depth)
        if isinstance(target, Instance):
            return list(self.attribute(target.cls, name))
        return list(self.attribute(target, name)) if target.kind == "class" else []

    def _value_in(self, module: str, expr: ast.expr, depth: int) -> list[Target]:
        """What a module-level alias stands for: a dotted name, or an object of a class."""
        call = isinstance(expr, ast.Call)
        parts = dotted(expr.func if isinstance(expr, ast.Call) else expr)
        targets = self.lookup(module, parts[0], depth) if parts and depth < 5 else []
        for part in parts[1:]:
            targets = [hit for t in targets for hit in self.attr(t, part, depth)]
        if call:
            return [Instance(t) for t in targets if isinstance(t, Unit) and t.kind == "class"]
        return targets

    def attribute(self, cls: Unit, name: str, depth: int = 0) -> list[Unit]:
        """The member `name` of class `cls`, or of its bases within the package."""
        own = self.units.get((cls.module, f"{cls.qualname}.{name}"))
        if own is not None or depth > 6 or not isinstance(cls.node, ast.ClassDef):
            return [own] if own else []
        for base in cls.node.bases:
            for parent in self.resolve_in(cls.module, base):
                if hit := self.attribute(parent, name, depth + 1):
                    return hit
        return []

    def resolve_in(self, module: str, expr: ast.expr) -> list[Unit]:
        """The definitions a dotted name written in `module`'s own code refers to."""
        if not dotted(expr):
            return []
        return [t for t in self._value_in(module, expr, 0) if isinstance(t, Unit)]

    def subclasses_of(self, cls: Unit) -> list[Unit]:
        """The package's classes that name `cls` among their bases (directly)."""
        return [
            u
            for u in self.units.values()
            if isinstance(u.node, ast.ClassDef)
            if any(cls in self.resolve_in(u.module, b) for b in u.node.bases)
        ]


def build_catalog(sources: dict[str, str], config: str = "") -> Catalog:
    """The catalog of the Python sources (path -> text); `config` is pyproject text, if any."""
    modules: dict[str, Module] = {}
    for path, text in sorted(sources.items()):
        try:
            tree = parse_python(text)
        except (SyntaxError, ValueError):
            continue
        name = module_name(path)
        module = Module(name, path, tree)
        parts = PurePosixPath(path).with_suffix("").parts
        private = any(p.startswith("_") and p not in ("__init__", "__main__") for p in parts)
        for node, prefix in _definitions(tree.body, ""):
            qualname = prefix + node.name
            public = not private and not any(p.startswith("_") for p in qualname.split("."))
            unit = Unit(name, path, qualname, _kind(node, prefix), node, public)
            module.units.setdefault(qualname, unit)  # the first of `if`/`else` twins
        _drop_shadowed(module)
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                if isinstance(stmt.targets[0], ast.Name):
                    module.aliases[stmt.targets[0].id] = stmt.value
        _bind_imports(module, path.endswith("__init__.py"))
        modules[name] = module
    catalog = Catalog(modules, {u.key: u for m in modules.values() for u in m.units.values()})
    _mark(catalog, config)
    return catalog


def _definitions(body: list[ast.stmt], prefix: str) -> Iterator[tuple[_DefNode, str]]:
    for node in body:
        if isinstance(node, _DefNode):
            yield node, prefix
            if isinstance(node, ast.ClassDef):
                yield from _definitions(node.body, f"{prefix}{node.name}.")
        elif isinstance(node, ast.If | ast.Try):  # e.g. version checks; not import fallbacks
            for block in (node.body, node.orelse, getattr(node, "finalbody", [])):
                yield from _definitions(block, prefix)


def _drop_shadowed(module: Module) -> None:
    """Leave out definitions that a later module-level import replaces (inline fallbacks)."""
    rebound: dict[str, int] = {}
    for stmt in ast.walk(module.tree):
        if isinstance(stmt, ast.ImportFrom | ast.Import) and stmt.col_offset <= 4:
            for alias in stmt.names:
                rebound[alias.asname or alias.name] = stmt.lineno
    shadowed = {
        name for name, unit in module.units.items() if rebound.get(name, 0) > unit.node.lineno
    }
    for qualname in [q for q in module.units if q.split(".")[0] in shadowed]:
        del module.units[qualname]


def _kind(node: _DefNode, prefix: str) -> str:
    if isinstance(node, ast.ClassDef):
        return "class"
    if not prefix:
        return "function"
    decorators = {ast.unparse(d).split(".")[-1] for d in node.decorator_list}
    return "property" if decorators & {"property", "setter", "cached_property"} else "method"


def _bind_imports(module: Module, is_package: bool) -> None:
    package = module.name.split(".") if is_package else module.name.split(".")[:-1]
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    module.imports[alias.asname] = ("module", alias.name)
                else:
                    top = alias.name.split(".")[0]
                    module.imports.setdefault(top, ("module", top))
        elif isinstance(node, ast.ImportFrom):
            source = resolve_relative(package, node.level, node.module)
            for alias in node.names:
                if alias.name == "*":
                    module.stars.append(source)
                    continue
                local = alias.asname or alias.name
                module.imports[local] = ("name", f"{source}:{alias.name}")


def resolve_relative(package: list[str], level: int, name: str | None) -> str:
    """The absolute module of `from <level dots><name> import ...` inside `package`."""
    if not level:
        return name or ""
    base = package[: len(package) - level + 1]
    return ".".join([*base, name] if name else base)


def _mark(catalog: Catalog, config: str) -> None:
    """Set exceptions, entry points and the fan-in of every unit."""
    scripts = {(m, f) for m, f in _SCRIPT.findall(config)}
    for unit in catalog.units.values():
        unit.is_entry = unit.kind == "function" and (
            unit.name == "main"
            or unit.module.endswith("__main__")
            or (unit.module, unit.name) in scripts
        )
    for unit in catalog.units.values():
        unit.is_exception = _is_exception(catalog, unit, 0)
    counts: Counter[str] = Counter()
    for module in catalog.modules.values():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Name):
                counts[node.id] += 1
            elif isinstance(node, ast.Attribute) and node.attr not in BUILTIN_METHODS:
                counts[node.attr] += 1  # `x.replace(...)` says nothing: str has one too
    for unit in catalog.units.values():
        unit.fan_in = counts[unit.name]


def _is_exception(catalog: Catalog, unit: Unit, depth: int) -> bool:
    if not isinstance(unit.node, ast.ClassDef) or depth > 6:
        return False
    for base in unit.node.bases:
        parts = dotted(base)
        if parts and (parts[-1] in _EXCEPTIONS or _ERROR_NAME.search(parts[-1])):
            return True
        if any(_is_exception(catalog, b, depth + 1) for b in catalog.resolve_in(unit.module, base)):
            return True
    return False


def dotted(expr: ast.expr) -> list[str]:
    """`a.b.c` as ["a", "b", "c"]; [] for anything that is not a dotted name."""
    if isinstance(expr, ast.Name):
        return [expr.id]
    if isinstance(expr, ast.Attribute) and (head := dotted(expr.value)):
        return [*head, expr.attr]
    return []
