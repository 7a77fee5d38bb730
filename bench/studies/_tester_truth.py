"""Run a package's own test suite and record what its test code calls (`tester_eval` truth).

Run as a script in a scratch copy of the package, with the package importable:

    python _tester_truth.py ROOT OUT.json SPEC.json

A profile hook sees every Python call. A call counts when its callee is defined in the package and
its caller is test code: a file under a `tests`/`test` directory, a `test_*.py`/`*_test.py` or
`conftest.py` file, or a doctest example. A decorator's inner wrapper defined in the package is
looked through (the test called the decorated name). `__init__`/`__new__` also credit the class of
the object being made, so a class whose constructor is inherited still counts as called.
"""

from __future__ import annotations

import doctest
import json
import os
import re
import sys
import threading
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

_TEST_DIRS = frozenset({"tests", "test", "testing"})


def is_test_file(filename: str, root: str) -> bool:
    """Whether a code object's file is test code of the package under `root`."""
    if filename.startswith("<doctest"):
        return True
    if not filename.startswith(root):
        return False
    parts = Path(filename[len(root) :].lstrip(os.sep)).parts
    name = parts[-1] if parts else ""
    stem = name.split(".")[0]
    return (
        bool(_TEST_DIRS & set(parts[:-1]))
        or stem.startswith("test_")
        or stem.endswith("_test")
        or name == "conftest.py"
    )


class Recorder:
    """The profile hook, and what it saw: {(file, qualname): first caller `file:line`}."""

    def __init__(self, root: str, sources: set[str]) -> None:
        self.root = root
        self.sources = sources
        self.called: dict[tuple[str, str], str] = {}
        self._test_files: dict[str, bool] = {}

    def _is_test(self, filename: str) -> bool:
        known = self._test_files.get(filename)
        if known is None:
            known = self._test_files[filename] = is_test_file(filename, self.root)
        return known

    def hook(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        code = frame.f_code
        if code.co_filename not in self.sources:
            # Generated constructors (namedtuple, dataclass) live in "<string>" files.
            if code.co_filename.startswith("<") and code.co_name in ("__init__", "__new__"):
                caller = frame.f_back
                if caller is not None and self._is_test(caller.f_code.co_filename):
                    self._credit_class(
                        frame, f"{self.rel(caller.f_code.co_filename)}:{caller.f_lineno}"
                    )
            return
        caller = frame.f_back
        # Look through up to two package-defined wrappers: closures (decorators) and
        # descriptors' `__get__` (a property of the package's own making).
        for _ in range(2):
            if caller is None or caller.f_code.co_filename not in self.sources:
                break
            if not _is_wrapper(caller, code):
                return
            caller = caller.f_back
        if caller is None or not self._is_test(caller.f_code.co_filename):
            return
        where = f"{self.rel(caller.f_code.co_filename)}:{caller.f_lineno}"
        if "<locals>" not in code.co_qualname:
            self.called.setdefault((self.rel(code.co_filename), code.co_qualname), where)
        if code.co_name in ("__init__", "__new__"):
            self._credit_class(frame, where)

    def _credit_class(self, frame: FrameType, where: str) -> None:
        """Credit the class of the object a constructor is making."""
        code = frame.f_code
        if not code.co_argcount:
            return
        first = frame.f_locals.get(code.co_varnames[0])
        made = first if isinstance(first, type) else type(first)
        module = sys.modules.get(made.__module__)
        path = getattr(module, "__file__", None)
        if path and os.path.realpath(path) in self.sources:
            key = (self.rel(os.path.realpath(path)), made.__qualname__)
            self.called.setdefault(key, where)

    def rel(self, filename: str) -> str:
        """A path relative to the package root (unchanged outside it)."""
        return (
            filename[len(self.root) :].lstrip(os.sep)
            if filename.startswith(self.root)
            else filename
        )


def _credit_bound_names(recorder: Recorder) -> None:
    """Credit a module-level name bound to a called function defined under another name.

    E.g. `batched = _batched` on Python versions where that branch runs: a test calling
    `batched` calls the public name, whatever the `def` said.
    """
    for module in list(sys.modules.values()):
        path = os.path.realpath(getattr(module, "__file__", None) or "")
        if path not in recorder.sources:
            continue
        for name, value in list(vars(module).items()):
            code = getattr(value, "__code__", None) if callable(value) else None
            if not isinstance(code, CodeType) or code.co_filename not in recorder.sources:
                continue
            caller = recorder.called.get((recorder.rel(code.co_filename), code.co_qualname))
            if caller is not None and name != code.co_qualname:
                recorder.called.setdefault((recorder.rel(path), name), caller)


def _is_wrapper(frame: FrameType, callee: CodeType) -> bool:
    """Whether a package frame only passes a call on.

    That is a closure (a decorator's wrapper), a descriptor's `__get__`, or the `__call__` of an
    object wrapping the callee (toolz' `curry`).
    """
    code = frame.f_code
    if "<locals>" in code.co_qualname or code.co_name == "__get__":
        return True
    if code.co_name != "__call__":
        return False
    wrapper = frame.f_locals.get("self")
    wrapped = getattr(wrapper, "func", None) or getattr(wrapper, "__wrapped__", None)
    return getattr(wrapped, "__code__", None) is callee


def _docs_doctests(root: Path, files: list[str]) -> None:
    """Run the examples of documentation files as Sphinx' doctest builder would.

    The `.. testsetup:: *` blocks are run first, as the examples' shared globals.
    """
    for name in files:
        text = (root / name).read_text("utf-8")
        setup = "\n".join(
            re.sub(r"^ {3}", "", block, flags=re.MULTILINE)
            for block in re.findall(r"^\.\. testsetup::.*\n\n((?:(?: {3}.*)?\n)+)", text, re.M)
        )
        globs: dict[str, Any] = {}
        exec(compile(setup, str(root / name), "exec"), globs)  # the package's own setup code
        doctest.testfile(str(root / name), module_relative=False, globs=globs, verbose=False)


def main() -> None:
    root, out, spec = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), json.loads(sys.argv[3])
    for entry in reversed(spec.get("sys_path", ["."])):
        sys.path.insert(0, str(root / entry))
    found = {str(p.resolve()) for p in (root / spec["package_dir"]).rglob("*.py")}
    sources = {p for p in found if not is_test_file(p, str(root))}  # toolz keeps tests inside
    recorder = Recorder(str(root), sources)
    os.chdir(root)
    import pytest

    sys.setprofile(recorder.hook)
    threading.setprofile(recorder.hook)
    try:
        # pytest-asyncio of this venv warns at start; a package whose warnings are errors stops.
        options = ["-q", "-p", "no:cacheprovider", "-p", "no:asyncio", "--no-header"]
        code = pytest.main([*options, *spec["pytest"]])
        _docs_doctests(root, spec.get("doc_files", []))
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    if code not in (0, 1):  # 1: some tests failed, which still ran what they call
        raise SystemExit(f"the test suite did not run (pytest exit code {int(code)})")
    _credit_bound_names(recorder)
    called = [{"file": f, "qualname": q, "caller": c} for (f, q), c in recorder.called.items()]
    out.write_text(json.dumps({"pytest_exit": int(code), "called": called}, indent=1))


if __name__ == "__main__":
    main()
