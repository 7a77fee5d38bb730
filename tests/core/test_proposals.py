"""The tester's proposed tests: built from what the code says, and run here to show they pass."""

from __future__ import annotations

import ast
import textwrap
from types import ModuleType

import pytest

from woolly_grpc.core.local.catalog import Catalog, build_catalog
from woolly_grpc.core.local.conditions import holds, violating
from woolly_grpc.core.local.proposals import propose, skeleton
from woolly_grpc.core.local.testfiles import proposed_files

SOURCE = '''
def scale(values: list, factor: int = 2, *, mode="fast"):
    """Scale the values.

    >>> scale([1, 2])
    [2, 4]
    >>> scale([])
    []
    """
    if factor < 0:
        raise ValueError("factor must not be negative")
    if mode not in ("fast", "slow"):
        raise KeyError(mode)
    if not values:
        return []
    return [v * factor for v in values]


def label(name, fallback):
    if name is None:
        raise TypeError("a name is needed")
    if isinstance(name, str):
        return name
    return fallback


def opaque(a, b):
    return a.combine(b)


def throw(exception, *args):
    raise exception(*args)


class Shape:
    def area(self):
        raise NotImplementedError("subclasses say")


class Box:
    def __init__(self, size=1):
        if size <= 0:
            raise ValueError("size must be positive")
        self.size = size

    def grow(self, by: int):
        if by == 0:
            return self
        return Box(self.size + by)
'''


def catalog() -> Catalog:
    return build_catalog({"lib/shapes.py": textwrap.dedent(SOURCE)})


def cases(name: str, doctests_run: bool = False) -> dict[str, str]:
    cat = catalog()
    unit = next(u for u in cat.public() if u.qualname == name)
    return {c.name: c.text for c in propose(cat, unit, doctests_run)}


def run(text: str, *names: str) -> list[str]:
    """Run the proposed test functions against the module above; their outcomes."""
    module = ModuleType("lib.shapes")
    exec(compile(textwrap.dedent(SOURCE), "lib/shapes.py", "exec"), module.__dict__)
    namespace = {**module.__dict__, "pytest": pytest}
    body = "\n".join(ln for ln in text.splitlines() if not ln.startswith("from lib."))
    exec(compile(body, "proposed.py", "exec"), namespace)
    outcomes = []
    for name in names:
        try:
            namespace[name]()
            outcomes.append("passed")
        except pytest.skip.Exception:
            outcomes.append("skipped")
    return outcomes


def test_docstring_examples_become_asserts_when_doctests_do_not_run() -> None:
    found = cases("scale")
    example = found["test_scale_docstring_examples"]
    assert "assert scale([1, 2]) == [2, 4]\n" in example and "assert scale([]) == []" in example
    assert "test_scale_docstring_examples" not in cases("scale", doctests_run=True)


def test_early_raises_become_pytest_raises_with_the_message() -> None:
    found = cases("scale")
    assert found["test_scale_raises_value_error_when_factor_0"] == (
        "def test_scale_raises_value_error_when_factor_0() -> None:\n"
        '    with pytest.raises(ValueError, match="factor must not be negative"):\n'
        "        scale([1, 2, 3], factor=-1)\n"
    )
    assert run("\n".join(found.values()), *found) == ["passed"] * len(found)


def test_a_later_check_is_used_only_when_earlier_ones_do_not_fire() -> None:
    found = cases("label")
    # `name is None` first; `isinstance(name, str)` gives the argument back, so it is checked
    assert list(found) == [
        "test_label_raises_type_error_when_name_is_none",
        "test_label_returns_early_when_isinstance_name_str",
    ]
    assert "label(None, None)" in found["test_label_raises_type_error_when_name_is_none"]
    assert (
        'assert label("text", None) == "text"'
        in found["test_label_returns_early_when_isinstance_name_str"]
    )
    assert run("\n".join(found.values()), *found) == ["passed", "passed"]


def test_classes_are_checked_through_their_constructor() -> None:
    found = cases("Box")
    assert list(found) == ["test_box_raises_value_error_when_size_0"]
    assert "Box(size=0)" in found["test_box_raises_value_error_when_size_0"]
    assert cases("Box.grow") == {}  # `return self` is no literal


def test_unconditional_raises_are_tested_too() -> None:
    assert cases("throw") == {
        "test_throw_raises_value_error": "def test_throw_raises_value_error() -> None:\n"
        "    with pytest.raises(ValueError):\n        throw(ValueError)\n"
    }
    area = cases("Shape.area")
    assert list(area) == ["test_shape_area_raises_not_implemented_error"]
    assert (
        'pytest.raises(NotImplementedError, match="subclasses say")'
        in area["test_shape_area_raises_not_implemented_error"]
    )
    assert run("\n".join([*cases("throw").values(), *area.values()]), *cases("throw"), *area) == [
        "passed",
        "passed",
    ]


def test_nothing_known_gives_a_marked_skeleton() -> None:
    cat = catalog()
    unit = next(u for u in cat.public() if u.qualname == "opaque")
    assert propose(cat, unit, False) == []
    made = skeleton(unit)
    assert made.kind == "skeleton"
    assert "pytest.skip(" in made.text and "assert" not in made.text
    assert run(made.text, made.name) == ["skipped"]


def test_conditions_are_evaluated_on_literal_arguments() -> None:
    check = ast.parse("x < 0 or not y", mode="eval").body
    assert holds(check, {"x": "3", "y": "[1]"}) is False
    assert holds(check, {"x": "-1", "y": "[1]"}) is True
    assert holds(check, {"x": "object()", "y": "[1]"}) is None
    assert violating(check, {"x": "3"}, {"x", "y"}) == {"x": "-1"}


def test_proposed_files_parse_and_import_only_names_the_module_has() -> None:
    cat = catalog()
    untested = [u for u in cat.public() if u.kind != "property"]
    files = proposed_files(cat, untested, False, ["lib/shapes.py"], ["tests/test_other.py"])
    assert [path for path, _, _ in files] == ["tests/test_shapes.py"]
    _, text, kinds = files[0]
    tree = ast.parse(text)
    imported = [a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names]
    assert imported == ["Box", "Shape", "label", "scale", "throw"]
    assert "skeleton" in kinds and "raises" in kinds and "example" in kinds
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    outcomes = run(text, *names)
    assert outcomes.count("passed") == len(names) - kinds.count("skeleton")
