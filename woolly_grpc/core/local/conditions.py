"""Argument values for proposed tests, and a function's early checks read as conditions on them.

`violating` picks argument values that make a check true; `holds` tells whether a check is
true for given values (so that an earlier check does not fire first). Values are Python source
text, as a proposed test writes them.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from typing import Any

from woolly_grpc.core._outline import parse_python

SAMPLES = {
    "int": "3", "float": "1.5", "str": '"text"', "bytes": 'b"data"', "bool": "True",
    "list": "[1, 2, 3]", "tuple": "(1, 2, 3)", "dict": '{"a": 1}', "set": "{1, 2}",
    "Iterable": "[1, 2, 3]", "Sequence": "[1, 2, 3]", "Callable": "len",
}  # fmt: skip
"""A value for a parameter, by its type hint."""
_TYPES: dict[str, type] = {
    t.__name__: t for t in (int, float, str, bytes, bool, list, tuple, dict, set, type(None))
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], object]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}  # fmt: skip
_BY_NAME = [
    (re.compile(r"^(n|k|size|count|num|length|width|limit|max\w*|min\w*|index|step)$"), "3"),
    (re.compile(r"^(s|text|string|name|prefix|suffix|sep|delim\w*|char\w*)$"), '"text"'),
    (re.compile(r"^(iterable|it|seq|sequence|items|values|data|\w+s)$"), "[1, 2, 3]"),
    (re.compile(r"^(func|function|fn|key|pred\w*|callback)$"), "len"),
]
"""A value for a parameter, by its name, when it has no type hint."""
_EMPTY = {"int": "0", "float": "0.0", "str": '""', "bytes": 'b""', "list": "[]", "dict": "{}"}


def violating(test: ast.expr, args: dict[str, str], params: set[str]) -> dict[str, str] | None:
    """The arguments with one set so that `test` holds, or None when that is unclear."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or):
        return next((a for v in test.values if (a := violating(v, dict(args), params))), None)
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return _negated(test.operand, args, params)
    if isinstance(test, ast.Constant) and test.value is True:
        return args
    if _is_call(test, "isinstance") and isinstance(test, ast.Call) and len(test.args) == 2:
        subject, kind = test.args
        sample = SAMPLES.get(ast.unparse(kind))
        if isinstance(subject, ast.Name) and subject.id in params and sample:
            return set_argument(args, subject.id, sample)
        return None
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return None
    left, op, right = test.left, test.ops[0], test.comparators[0]
    if not (isinstance(left, ast.Name) and left.id in params and isinstance(right, ast.Constant)):
        return None
    value = right.value
    if isinstance(op, ast.Is | ast.Eq) and (value is None or isinstance(value, int | str)):
        return set_argument(args, left.id, repr(value))
    if isinstance(value, int | float) and not isinstance(value, bool):
        shifted = {ast.Lt: value - 1, ast.LtE: value, ast.Gt: value + 1, ast.GtE: value}  # edges
        if type(op) in shifted:
            return set_argument(args, left.id, repr(shifted[type(op)]))
    return None


def holds(test: ast.expr, values: dict[str, str]) -> bool | None:
    """Whether `test` is true with these argument values; None when that cannot be told."""
    if isinstance(test, ast.BoolOp):
        parts = [holds(v, values) for v in test.values]
        if isinstance(test.op, ast.Or):
            return True if True in parts else None if None in parts else False
        return False if False in parts else None if None in parts else True
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = holds(test.operand, values)
        return None if inner is None else not inner
    try:
        value = _python(test, values)
    except (ValueError, TypeError, KeyError):
        return None
    return bool(value)


def _python(expr: ast.expr, values: dict[str, str]) -> object:
    """The value of a name, constant, one comparison or an isinstance/callable/len check."""
    if isinstance(expr, ast.Constant):
        return expr.value
    if isinstance(expr, ast.Name):
        text = values[expr.id]
        return len if text == "len" else object() if text == "object()" else literal_value(text)
    if isinstance(expr, ast.Compare) and len(expr.ops) == 1:
        left, right = _python(expr.left, values), _python(expr.comparators[0], values)
        return _COMPARE[type(expr.ops[0])](left, right)
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and len(expr.args) >= 1:
        subject = _python(expr.args[0], values)
        if expr.func.id == "callable":
            return callable(subject)
        if expr.func.id == "len":
            return len(subject)  # type: ignore[arg-type]
        if expr.func.id == "isinstance" and len(expr.args) == 2:
            kinds = expr.args[1].elts if isinstance(expr.args[1], ast.Tuple) else [expr.args[1]]
            types = [_TYPES[ast.unparse(k)] for k in kinds]
            return isinstance(subject, tuple(types))
    raise ValueError("not a check this can evaluate")


def set_argument(args: dict[str, str], name: str, value: str) -> dict[str, str]:
    """`args` with parameter `name` given `value`: in place if required, else by keyword."""
    key = name if name in args else f"*{name}"
    return {**args, key: value}


def literal_value(text: str) -> object:
    """`ast.literal_eval` of `text`, parsed through `parse_python` (one thread at a time).

    Raises:
        ValueError: `text` is not one Python literal.
    """
    try:
        body = parse_python(text.strip()).body
    except (SyntaxError, MemoryError, RecursionError) as exc:
        raise ValueError("not Python") from exc
    if len(body) != 1 or not isinstance(body[0], ast.Expr):
        raise ValueError("not one expression")
    return ast.literal_eval(body[0].value)


def defaults(args: ast.arguments) -> dict[str, str]:
    """The literal default values of the parameters that have one."""
    positional = [*args.posonlyargs, *args.args]
    pairs = list(
        zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True)
    )
    pairs += [
        (a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None
    ]
    found = {}
    for arg, default in pairs:
        literal = _literal_source(default)
        found[arg.arg] = literal if literal is not None else "object()"
    return found


def arguments(args: ast.arguments, skip_first: bool, loose: bool = False) -> dict[str, str] | None:
    """Values for the required parameters (defaults stay); None when one cannot be guessed.

    `loose` gives None to a parameter nothing hints at instead.
    """
    positional = [*args.posonlyargs, *args.args][1 if skip_first else 0 :]
    required = positional[: len(positional) - len(args.defaults)] if args.defaults else positional
    keywords = [a for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None]
    values: dict[str, str] = {}
    for arg in [*required, *keywords]:
        value = _sample(arg) or ("None" if loose else None)
        if value is None:
            return None
        values[("*" if arg in keywords else "") + arg.arg] = value
    return values


def _sample(arg: ast.arg) -> str | None:
    if arg.annotation is not None:
        hint = ast.unparse(arg.annotation).split("[")[0].split("|")[0].strip().split(".")[-1]
        if hint in SAMPLES:
            return SAMPLES[hint]
    return next((value for pattern, value in _BY_NAME if pattern.match(arg.arg)), None)


def _negated(inner: ast.expr, args: dict[str, str], params: set[str]) -> dict[str, str] | None:
    """The arguments with one set so that `not inner` holds."""
    if isinstance(inner, ast.Name) and inner.id in params:
        return set_argument(args, inner.id, _falsy(args.get(inner.id, "")))
    if _is_call(inner, "isinstance") or _is_call(inner, "callable"):  # any other object
        name = inner.args[0]  # type: ignore[attr-defined]
        if isinstance(name, ast.Name) and name.id in params:
            return set_argument(args, name.id, "object()")
    return None


def _falsy(value: str) -> str:
    kind = {"3": "int", "1.5": "float", '"text"': "str", "[1, 2, 3]": "list"}.get(value, "")
    return _EMPTY.get(kind, "None")


def _is_call(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name


def _literal_source(default: ast.expr) -> str | None:
    """A default value as source text, when it is a literal."""
    try:
        ast.literal_eval(default)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return ast.unparse(default)
