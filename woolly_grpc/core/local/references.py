"""Which public names the test code refers to, read with `ast`, and where it first does.

Each file's names are bound flow-insensitively (a name means everything it is ever bound to in
the file): imports, aliases (`b2h = strutils.bytes2human`), instances (`omd = OMD()`,
`with Cache() as c`, pytest fixtures, `Cache = LRU` in a test class then `self.Cache()`, also
across files for mixins), loop and `parametrize` variables. Then every name, attribute, call,
`getattr(x, "name")`, string of a `parametrize` table and `test_<name>` function or class counts.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from .catalog import Catalog, Instance, Key, Target, Unit, dotted, resolve_relative
from .evidence import module_name
from .naming import by_parametrize_strings, by_receiver, by_test_names


@dataclass(frozen=True)
class Reference:
    """Where a name is first referred to, and how, so that a reader can check it."""

    path: str
    line: int
    how: str
    weak: bool = False
    """Only imported or only named after: used when nothing stronger is found."""


Value = Target


@dataclass
class Code:
    """One piece of test code: a file, or the doctest examples of a module or document."""

    path: str
    tree: ast.Module
    module: str | None = None
    """For a docstring's examples, the module whose globals they run in."""
    env: defaultdict[str, set[Value]] = field(default_factory=lambda: defaultdict(set))


def find_references(catalog: Catalog, pieces: list[Code]) -> dict[Key, Reference]:
    """The first reference of each unit the test code refers to."""
    shared: defaultdict[str, set[Value]] = defaultdict(set)
    for code in pieces:
        _Binder(catalog, code).bind()
        for key, values in code.env.items():
            if key.startswith(("self.", "cls.")):
                shared[key] |= values  # mixins use attributes that subclasses in other files set
    found: dict[Key, Reference] = {}
    for code in pieces:
        for key, values in shared.items():
            code.env[key] |= values
        binder = _Binder(catalog, code)
        binder.bind()
        doctest = code.module is not None or not code.path.endswith(".py")
        for unit, found_ref in binder.references():
            ref = replace(found_ref, how=f"doctest, {found_ref.how}") if doctest else found_ref
            owner = catalog.units.get((unit.module, unit.qualname.rpartition(".")[0]))
            # A method called counts for its class too (an object of it was at hand).
            for credited in [unit] + ([owner] if owner and not ref.weak else []):
                old = found.get(credited.key)
                if credited.public and (old is None or _rank(old) > _rank(ref)):
                    found[credited.key] = ref
    return found


def _rank(ref: Reference) -> tuple[bool, bool, str, int]:
    """Which reference to show: strong before weak, test code before doctests, then first."""
    return ref.weak, ref.how.startswith("doctest"), ref.path, ref.line


class _Binder:
    def __init__(self, catalog: Catalog, code: Code) -> None:
        self.catalog = catalog
        self.code = code
        self.env = code.env
        self.package = module_name(code.path).split(".")[:-1]
        self.stars: list[str] = []
        self.imported: list[tuple[Unit, int]] = []
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] | None = None

    # --- binding -------------------------------------------------------------------------------

    def bind(self) -> None:
        self._imports()
        statements = list(ast.walk(self.code.tree))
        for _ in range(3):  # later bindings may depend on earlier ones
            before = sum(len(v) for v in self.env.values())
            for node in statements:
                self._bind_one(node)
            if sum(len(v) for v in self.env.values()) == before:
                break

    def _imports(self) -> None:
        for node in ast.walk(self.code.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = alias.name if alias.asname else alias.name.split(".")[0]
                    if target in self.catalog.modules:
                        self.env[alias.asname or target].add(target)
            elif isinstance(node, ast.ImportFrom):
                source = resolve_relative(self.package, node.level, node.module)
                for alias in node.names:
                    if alias.name == "*":
                        self.stars.append(source)
                        continue
                    hits = self.catalog.attr(source, alias.name)
                    self.env[alias.asname or alias.name].update(hits)
                    self.imported += [(u, node.lineno) for u in hits if isinstance(u, Unit)]

    def _bind_one(self, node: ast.AST) -> None:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            values = self.evaluate(node.value)
            for target in targets:
                self._store(target, values, node.value)
        elif isinstance(node, ast.ClassDef):
            self._bind_class(node)
        elif isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                if item.optional_vars is not None:
                    self._store(item.optional_vars, self.evaluate(item.context_expr), None)
        elif isinstance(node, ast.For | ast.comprehension):
            self._store(node.target, self._elements(node.iter), None)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            self._bind_function(node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            self._bind_arguments(node, node.func.id)

    def _bind_class(self, node: ast.ClassDef) -> None:
        for base in node.bases:  # a test's subclass stands for its package base class
            self.env[node.name] |= {v for v in self.evaluate(base) if isinstance(v, Unit)}
        for stmt in node.body:  # `Cache = LRU` in a test class: `self.Cache` elsewhere
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                if isinstance(name := stmt.targets[0], ast.Name):
                    for prefix in ("self.", "cls."):
                        self.env[prefix + name.id] |= self.evaluate(stmt.value)

    def _bind_arguments(self, call: ast.Call, name: str) -> None:
        """A helper of the test file called with package names: its parameters get them."""
        if self.functions is None:
            self.functions = {
                f.name: f
                for f in ast.walk(self.code.tree)
                if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
            }
        helper = self.functions.get(name)
        if helper is None:
            return
        params = [a.arg for a in [*helper.args.posonlyargs, *helper.args.args]]
        for param, arg in zip(params, call.args, strict=False):
            self.env[param] |= self.evaluate(arg)
        for keyword in call.keywords:
            if keyword.arg:
                self.env[keyword.arg] |= self.evaluate(keyword.value)

    def _bind_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            text = ast.unparse(decorator)
            if "fixture" in text:  # a test asking for the fixture gets what it returns
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Return | ast.Yield) and inner.value is not None:
                        self.env[node.name] |= self.evaluate(inner.value)
            if "parametrize" in text and isinstance(decorator, ast.Call):
                self._bind_parametrize(decorator)

    def _bind_parametrize(self, call: ast.Call) -> None:
        if len(call.args) < 2 or not isinstance(call.args[0], ast.Constant):
            return
        names = [n.strip() for n in str(call.args[0].value).split(",") if n.strip()]
        rows = call.args[1].elts if isinstance(call.args[1], ast.List | ast.Tuple) else []
        for row in rows:
            cells = row.elts if len(names) > 1 and isinstance(row, ast.Tuple) else [row]
            for name, cell in zip(names, cells, strict=False):
                self.env[name] |= self.evaluate(cell)

    def _store(self, target: ast.expr, values: set[Value], value: ast.expr | None) -> None:
        if isinstance(target, ast.Name | ast.Attribute):
            self.env[ast.unparse(target)] |= values
        elif isinstance(target, ast.Tuple | ast.List):
            pairs = value.elts if isinstance(value, ast.Tuple | ast.List) else []
            if len(pairs) == len(target.elts):
                for inner, item in zip(target.elts, pairs, strict=True):
                    self._store(inner, self.evaluate(item), item)

    def _elements(self, expr: ast.expr) -> set[Value]:
        if isinstance(expr, ast.List | ast.Tuple | ast.Set):
            return set().union(*(self.evaluate(e) for e in expr.elts))
        return set()

    # --- evaluation ----------------------------------------------------------------------------

    def evaluate(self, expr: ast.expr) -> set[Value]:
        """Everything `expr` may be, as far as the bindings show."""
        if isinstance(expr, ast.Name | ast.Attribute):
            known = self.env.get(ast.unparse(expr))
            if known:
                return set(known)
        if isinstance(expr, ast.Name):
            return set(self._global(expr.id))
        if isinstance(expr, ast.Attribute):
            return {hit for v in self.evaluate(expr.value) for hit in self._attr(v, expr.attr)}
        if isinstance(expr, ast.Call) and dotted(expr.func) == ["getattr"]:
            return set(self._getattr(expr))
        if isinstance(expr, ast.Call):
            return {made for v in self.evaluate(expr.func) for made in self._result(v)}
        return set()

    def _getattr(self, call: ast.Call) -> list[Value]:
        """`getattr(owner, "name")`: the member, when the name is written out."""
        if len(call.args) < 2:
            return []
        name = call.args[1]
        if not isinstance(name, ast.Constant) or not isinstance(name.value, str):
            return []
        return [hit for v in self.evaluate(call.args[0]) for hit in self._attr(v, name.value)]

    def _global(self, name: str) -> list[Target]:
        bases = [self.code.module] if self.code.module else []
        for module in bases + self.stars:
            if hits := self.catalog.lookup(module, name):
                return hits
        return []

    def _attr(self, value: Value, name: str) -> list[Value]:
        return self.catalog.attr(value, name)

    def _result(self, value: Value) -> list[Value]:
        if isinstance(value, Unit) and value.kind == "class":
            return [Instance(value)]
        if isinstance(value, Unit) and isinstance(value.node, ast.FunctionDef):
            made = [d for d in value.node.decorator_list if ast.unparse(d) == "classmethod"]
            owner = self.catalog.units.get((value.module, value.qualname.rpartition(".")[0]))
            if made and owner:  # alternative constructors
                return [Instance(owner)]
            returns = value.node.returns
            if returns is not None:
                return [Instance(u) for u in self.catalog.resolve_in(value.module, returns)]
        return []

    # --- references ----------------------------------------------------------------------------

    def references(self) -> Iterable[tuple[Unit, Reference]]:
        """Every (unit, reference) of this code, in no particular order."""
        path = self.code.path
        tree = self.code.tree
        calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        in_play: set[Unit] = set()
        unresolved: list[ast.Attribute] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Load):
                values = self.evaluate(node)
                verb = "calls" if id(node) in calls else "uses"
                for unit in _units(values):
                    yield unit, Reference(path, node.lineno, f"{verb} `{ast.unparse(node)}`")
                    owner = self.catalog.units.get((unit.module, unit.qualname.rpartition(".")[0]))
                    in_play |= {unit} | ({owner} if owner else set())
                in_play |= {v.cls for v in values if isinstance(v, Instance)}
                if isinstance(node, ast.Attribute) and not values:
                    unresolved.append(node)
            elif isinstance(node, ast.Call) and dotted(node.func) == ["getattr"]:
                for unit in _units(self._getattr(node)):
                    yield unit, Reference(path, node.lineno, "`getattr` with its name")
        modules = {v for values in self.env.values() for v in values if isinstance(v, str)}
        for unit, line, how in [
            *by_receiver(self.catalog, unresolved, in_play),
            *by_parametrize_strings(self.catalog, tree, modules),
        ]:
            yield unit, Reference(path, line, how)
        for unit, line, how in by_test_names(self.catalog, path, tree, modules | set(self.stars)):
            yield unit, Reference(path, line, how, weak=True)
        for unit, line in self.imported:
            yield unit, Reference(path, line, "imported", weak=True)


def _units(values: Iterable[Value]) -> list[Unit]:
    return [v for v in values if isinstance(v, Unit)]
