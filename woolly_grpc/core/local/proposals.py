"""Proposed tests built from what the code itself says, or marked skeletons when it says nothing.

Three sources, best first: the docstring's `>>>` examples (as asserts), the function's own early
`if <condition>: raise SomeError(...)` checks (as `pytest.raises` cases, with arguments that meet
the condition and the other arguments taken from defaults, type hints and names), and otherwise a
skeleton that skips with a note. No test asserts a type or "not None".
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass

from woolly_grpc.core._outline import parse_python

from .catalog import Catalog, Unit
from .conditions import arguments, defaults, holds, literal_value, set_argument, violating
from .doctests import docstring_examples

_BUILTINS = frozenset(dir(builtins))


@dataclass(frozen=True)
class Case:
    """One proposed test function: its text and the names it imports from the unit's module."""

    name: str
    text: str
    imports: frozenset[str]
    kind: str
    """`example`, `raises` or `skeleton`."""


def propose(catalog: Catalog, unit: Unit, doctests_run: bool) -> list[Case]:
    """The test functions the code itself backs for one untested unit, best first (maybe none)."""
    stem = _snake(unit.qualname.replace(".", "_"))
    cases = [] if doctests_run else _from_examples(catalog, unit, stem)
    return cases + _from_guards(catalog, unit, stem)


def skeleton(unit: Unit) -> Case:
    """A test to write by hand, skipped until then, with a call built from the signature."""
    stem = _snake(unit.qualname.replace(".", "_"))
    note = f"write me: what `{unit.qualname}` should do (its code does not say)"
    node = unit.node
    static = any(ast.unparse(d) == "staticmethod" for d in node.decorator_list)
    first = unit.kind in ("method", "property") and not static  # `self` or `cls`
    args = None if isinstance(node, ast.ClassDef) else arguments(node.args, first)
    hint = f"    # e.g. {unit.name}({_join(args)})\n" if args is not None else ""
    text = f'def test_{stem}() -> None:\n{hint}    pytest.skip("{note}")\n'
    return Case(f"test_{stem}", text, frozenset(), "skeleton")


def _from_examples(catalog: Catalog, unit: Unit, stem: str) -> list[Case]:
    body: list[str] = []
    asserted = 0
    for example in docstring_examples(unit.node):
        if "doctest:" in example.source:
            continue
        try:
            tree = parse_python(example.source)
        except SyntaxError:
            return []
        expected = _literal(example.want)
        if example.want and isinstance(tree.body[-1], ast.Expr) and expected is not None:
            body.append(f"assert {ast.unparse(tree.body[-1].value)} == {expected}")
            asserted += 1
        elif not example.want or not isinstance(tree.body[-1], ast.Expr):
            body.append(ast.unparse(tree))
        else:
            break  # later examples may rely on output we cannot check
    if not asserted:
        return []
    code = "\n".join(body)
    names = _free_names(parse_python(code))
    if not all(_importable(catalog, unit.module, n) for n in names):
        return []
    text = f"def test_{stem}_docstring_examples() -> None:\n" + _indent(code)
    return [Case(f"test_{stem}_docstring_examples", text, frozenset(names), "example")]


def _from_guards(catalog: Catalog, unit: Unit, stem: str) -> list[Case]:
    """Cases from the early `if <condition>: raise/return <literal>` checks.

    The arguments meet the condition; the others come from defaults, hints and names.
    """
    callee = _callee(catalog, unit)
    if callee is None:
        return []
    node, call_name = callee
    static = any(ast.unparse(d) == "staticmethod" for d in node.decorator_list)
    skip = unit.kind in ("method", "class") and not static
    # The checks come first, so a parameter nothing hints at may be None: it is not used yet.
    base = arguments(node.args, skip, loose=True) or {}
    given = defaults(node.args)
    generator = any(isinstance(n, ast.Yield | ast.YieldFrom) for n in ast.walk(node))
    guards = _guards(node)
    cases: list[Case] = []
    for index, (guard, error, outcome) in enumerate(guards):
        args = violating(guard, dict(base), set(given) | {k.lstrip("*") for k in base})
        usable = bool(error) if error is not None else bool(outcome) and not generator
        if args is None or not usable or len(cases) == 2:
            continue
        values = {**given, **{k.lstrip("*"): v for k, v in args.items()}}
        if holds(guard, values) is not True or any(
            holds(g, values) is not False for g, _, _ in guards[:index]
        ):
            continue  # an earlier check would fire first, or this one may not
        call = f"{call_name}({_join(args)})"
        if error and error in values:  # `raise exception(...)` of a parameter: pass one
            args, error = set_argument(args, error, "ValueError"), "ValueError"
            call = f"{call_name}({_join(args)})"
        if error is not None and not _importable(catalog, unit.module, error):
            continue
        if outcome.startswith("="):  # `return <argument>`
            if outcome[1:] not in values or values[outcome[1:]] in ("object()", "len"):
                continue
            outcome = values[outcome[1:]]
        cases.append(_case(unit, stem, guard, error, outcome, call, generator))
    return cases


def _callee(catalog: Catalog, unit: Unit) -> tuple[ast.FunctionDef, str] | None:
    """The function a call runs for `unit`, and how a test calls it; None when unclear."""
    node = unit.node
    call_name = unit.name
    if isinstance(node, ast.ClassDef):
        init = catalog.units.get((unit.module, f"{unit.qualname}.__init__"))
        if init is None or "." in unit.qualname:
            return None
        node = init.node
    elif unit.kind == "method":
        owner = catalog.units.get((unit.module, unit.qualname.rpartition(".")[0]))
        made = _plain_call(catalog, owner) if owner else None
        if made is None:
            return None
        call_name = f"{made}.{unit.name}"
    elif unit.kind != "function":
        return None
    if not isinstance(node, ast.FunctionDef):
        return None  # async functions need an event loop; classes are not called here
    if any(ast.unparse(d) not in ("staticmethod", "classmethod") for d in node.decorator_list):
        return None  # a decorator may change what calling it does
    return node, call_name


def _case(
    unit: Unit, stem: str, guard: ast.expr, error: str | None, outcome: str, call: str, gen: bool
) -> Case:
    """One test: the call meets `guard`, so it raises `error` or returns `outcome`."""
    names = {unit.qualname.split(".")[0]}
    if error is None:  # an early `return <literal>`
        name = f"test_{stem}_returns_early_when_{_words(guard)}"
        check = "is" if outcome in ("None", "True", "False") else "=="
        text = f"def {name}() -> None:\n    assert {call} {check} {outcome}\n"
        return Case(name, text, frozenset(names), "returns")
    call = f"list({call})" if gen else call
    match = f', match="{outcome}"' if outcome else ""
    when = "" if isinstance(guard, ast.Constant) else f"_when_{_words(guard)}"
    name = f"test_{stem}_raises_{_snake(error)}{when}"
    text = f"def {name}() -> None:\n    with pytest.raises({error}{match}):\n        {call}\n"
    return Case(name, text, frozenset(names | ({error} - _BUILTINS)), "raises")


def _guards(
    node: ast.FunctionDef | ast.AsyncFunctionDef,
) -> list[tuple[ast.expr, str | None, str]]:
    """The early `if` checks: (condition, exception name, message start) for a `raise`.

    (condition, None, literal) for an early `return <literal>`.
    """
    found: list[tuple[ast.expr, str | None, str]] = []
    body = node.body[1:] if ast.get_docstring(node) is not None else node.body
    for stmt in body[:6]:  # only the leading checks: after them, arguments may have changed
        if isinstance(stmt, ast.Raise):  # raises whatever the arguments (e.g. abstract methods)
            found.append((ast.Constant(True), *_raised(stmt)))
            break
        if not (isinstance(stmt, ast.If) and len(stmt.body) == 1 and not stmt.orelse):
            break
        first = stmt.body[0]
        if isinstance(first, ast.Raise):
            found.append((stmt.test, *_raised(first)))
        elif isinstance(first, ast.Return) and isinstance(first.value, ast.Name):
            found.append((stmt.test, None, f"={first.value.id}"))  # gives an argument back
        elif isinstance(first, ast.Return) and first.value is not None:
            found.append((stmt.test, None, _literal(ast.unparse(first.value)) or ""))
        else:
            break
    # Every check is kept (so later ones know what comes first); unusable outcomes are "".
    return found


def _raised(stmt: ast.Raise) -> tuple[str, str]:
    """The name of the exception a `raise` raises ("" when not a plain name) and its message."""
    exc = stmt.exc
    if isinstance(exc, ast.Call):
        return (exc.func.id if isinstance(exc.func, ast.Name) else ""), _message(exc)
    return (exc.id if isinstance(exc, ast.Name) else ""), ""


def _plain_call(catalog: Catalog, cls: Unit) -> str | None:
    """`Cls()` when the class can be made without arguments, else None."""
    init = catalog.units.get((cls.module, f"{cls.qualname}.__init__"))
    if init is None or isinstance(init.node, ast.ClassDef):
        return f"{cls.qualname}()" if "." not in cls.qualname else None
    needed = arguments(init.node.args, skip_first=True)
    return f"{cls.qualname}()" if needed == {} else None


def _importable(catalog: Catalog, module: str, name: str) -> bool:
    return (
        name in _BUILTINS or bool(catalog.lookup(module, name)) or _imported(catalog, module, name)
    )


def _imported(catalog: Catalog, module: str, name: str) -> bool:
    found = catalog.modules.get(module)
    return found is not None and (name in found.imports or name in found.aliases)


def _free_names(tree: ast.Module) -> set[str]:
    bound = {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)
    }
    loaded = {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    }
    return {n for n in loaded - bound if n not in _BUILTINS}


def _literal(text: str) -> str | None:
    """`text` as a Python literal, when doctest output is one (not a repr of an object)."""
    if not text.strip() or "..." in text:
        return None
    try:
        value = literal_value(text)
    except (ValueError, TypeError):
        return None
    text = repr(value)
    plain = isinstance(value, str) and not any(c in text for c in '"\\')
    return f'"{value}"' if plain else text  # the quotes ruff's formatter would write


def _message(call: ast.Call) -> str:
    """The start of a raised error's constant message, as a regular expression."""
    first = call.args[0] if call.args else None
    if isinstance(first, ast.JoinedStr):
        first = next((v for v in first.values if isinstance(v, ast.Constant)), None)
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        words = re.match(r"[\w ,:'-]*", first.value)  # no regex meaning, no escapes needed
        text = words.group(0).strip() if words else ""
        return text[:40] if len(text) >= 6 else ""
    return ""


def _join(args: dict[str, str] | None) -> str:
    items = (args or {}).items()
    return ", ".join(f"{k[1:]}={v}" if k.startswith("*") else v for k, v in items)


def _words(test: ast.expr) -> str:
    text = re.sub(r"[^a-z0-9]+", "_", ast.unparse(test).lower()).strip("_")
    return text[:30].rstrip("_") or "invalid"


def _indent(code: str) -> str:
    return "".join(f"    {line}\n" for line in code.splitlines())


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower().strip("_")
