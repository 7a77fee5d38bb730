"""The package's shape: the spine at the top, subsystems in folders, no import cycles, a core
that knows no transport."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import woolly_grpc

PACKAGE = Path(woolly_grpc.__file__).parent
SPINE = {
    "__init__",
    "__main__",
    "api",
    "calls",
    "config",
    "convert",
    "errors",
    "server",
    "service",
    "status",
    "testing",
}
SUBSYSTEMS = {
    "cache",
    "cli",
    "client",
    "core",
    "interceptors",
    "observability",
    "runs",
    "saved_agents",
    "store",
    "tracing",
    "transport",
    "workers",
}
BANNED_IN_CORE = ("grpc", "google.protobuf", "prometheus_client", "redis", "woolly_grpc._gen")


def our_modules() -> dict[str, Path]:
    """Every module of the package by dotted name (generated code left out)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "_gen" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imported_names(name: str, path: Path, modules: set[str]) -> set[str]:
    """The modules a module imports, wherever the import statement is (TYPE_CHECKING blocks and
    function bodies included: a cycle through them is still a cycle of ideas).

    `from pkg import sub` imports `pkg.sub` when that is a module of ours, else a name of `pkg`.
    A package's own `__init__` running first is left out, as every import tool does.
    """
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                names.add(sub if sub in modules else module)
    return names


def import_graph() -> dict[str, set[str]]:
    modules = our_modules()
    return {
        name: {m for m in imported_names(name, path, set(modules)) if m in modules} - {name}
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = "open"
        stack.append(name)
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                return [*stack[stack.index(other) :], other]
            if other not in state and (cycle := visit(other)):
                return cycle
        stack.pop()
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def test_the_package_has_no_import_cycles() -> None:
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_relative_imports_resolve_to_our_modules() -> None:
    graph = import_graph()
    assert "woolly_grpc.runs.owned" in graph["woolly_grpc.runs.manager"]  # from .owned import
    assert "woolly_grpc.core.types" in graph["woolly_grpc.core.local.evidence"]
    assert "woolly_grpc.calls" in graph["woolly_grpc.service"]  # from . import calls


def test_the_top_level_is_the_spine_and_subsystems_are_folders() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} - {"_gen"}
    assert top == SPINE and len(top) <= 12
    assert folders == SUBSYSTEMS


def test_the_core_imports_no_transport() -> None:
    offenders = []
    modules = our_modules()
    for name, path in modules.items():
        if not name.startswith("woolly_grpc.core"):
            continue
        for imported in imported_names(name, path, set(modules)):
            if imported.startswith(BANNED_IN_CORE):
                offenders.append(f"{name}: {imported}")
    assert offenders == []
    assert "woolly_grpc.core.local.model" in our_modules(), "the walk reaches nested folders"


def test_the_logging_setup_imports_only_the_standard_library() -> None:
    """The workers' supervisor sets up logging and serves nothing: the agent core (about 100 MiB
    resident), pydantic-ai and prometheus-client's registry have no business in it.

    grpc is loaded by the package itself (`WoollyClient`), so the check on it is what the
    logging module adds to `import woolly_grpc`: the standard library and nothing else.
    """
    script = (
        "import json, sys, woolly_grpc; before = set(sys.modules); "
        "import woolly_grpc.observability.logs; "
        "print(json.dumps([sorted(sys.modules), sorted(set(sys.modules) - before)]))"
    )
    found = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PACKAGE.parent,  # this checkout's package, whatever the environment has installed
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    loaded, added = json.loads(found)
    heavy = ("woolly_grpc.core", "pydantic_ai", "prometheus_client")
    assert [name for name in loaded if name.startswith(heavy)] == []
    ours = {"woolly_grpc.observability", "woolly_grpc.observability.logs"}
    assert [
        name
        for name in added
        if name not in ours and name.split(".")[0] not in sys.stdlib_module_names
    ] == []
