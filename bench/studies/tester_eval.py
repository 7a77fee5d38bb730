"""How well the offline tester tells tested from untested names, and whether its tests run green.

    python -m bench.studies.tester_eval [--only NAME] [--json OUT] [--cache DIR]

Four real PyPI packages are vendored, unmodified, under `tests/fixtures/pypi/` (see its README
for versions and licences): boltons (17k lines, tests with pytest and `--doctest-modules`),
more-itertools (7.5k lines, unittest plus its docstrings through `DocTestSuite`), toolz (3.8k
lines, tests inside the package, `curry` wrappers, `doctest.testmod`) and cachetools (1.7k lines
of classes, pytest plus the Sphinx doctests of `docs/index.rst`).

**The names.** Every public function, class and method of the package, read with `ast`
(`woolly_grpc.core.local.catalog`: module-level definitions, also under a module-level `if`/`try`
but not import fallbacks replaced by a later import; no leading underscore in the name or its
module path), without exception classes and entry points (`main`, console scripts), which the
tester sets apart.

**Ground truth.** A name is *tested* when the package's own test suite, run the way its CI runs
it, calls it from test code: `_tester_truth.py` runs the suite under a profile hook and records
each call of a package function whose caller is test code (a file under `tests/`, a `test_*.py`
or `conftest.py`, or a doctest example; a package wrapper in between is looked through: a
decorator's closure, a descriptor's `__get__`, the `__call__` of an object wrapping the callee).
A class is tested when an object of it is made there or one of its methods is called there; a
module-level name bound to a called function (`batched = _batched`) is tested too. This is
independent of the tester's `ast` reading: what runs, not what is written. It is stricter than a
reviewer in one way (a name only mentioned, e.g. in `isinstance`, is not tested) and looser in
none. The runs are cached under `--cache` by the fixture's content.

**Scores.** "Untested" is the positive class: recall = truly untested names the tester calls
untested / truly untested names; precision = names it calls untested that are / names it calls
untested. The tester's full verdict is read back from the run's tool results with
`tester.assess` (the answer shows the top of the list and counts the rest). A tester without
`assess` (the one before issue 19) is read from its answer's "Coverage by name" list instead.
Each proposed file is written into a scratch copy of the package and run with pytest; a test
function counts as green when it passes (20 s at most each, pytest-timeout), skeletons
(`pytest.skip`) are counted apart. The answer
size is the UTF-8 length of the whole answer.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic_ai import Agent

from woolly_grpc.core.local import local_model
from woolly_grpc.core.local.catalog import Unit, build_catalog
from woolly_grpc.core.shaping import shape
from woolly_grpc.core.tools import REPOSITORY_TOOLSET, RepoDeps, resolve_repository
from woolly_grpc.core.types import AgentType

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "pypi"
TRUTH_SCRIPT = Path(__file__).with_name("_tester_truth.py")
SPECS: dict[str, dict[str, Any]] = {
    "boltons": {"package_dir": "boltons", "pytest": ["--doctest-modules", "boltons", "tests"]},
    "more_itertools": {
        # Its tests' `load_tests` add the modules' doctests; pytest's flag runs the same ones.
        "package_dir": "more_itertools",
        "pytest": ["--doctest-modules", "more_itertools", "tests"],
    },
    "toolz": {"package_dir": "toolz", "pytest": ["toolz"]},
    "cachetools": {
        "package_dir": "src/cachetools",
        "sys_path": ["src"],
        "pytest": ["tests"],
        "doc_files": ["docs/index.rst"],
    },
}


@dataclass
class Score:
    package: str
    source_lines: int
    names: int
    truly_untested: int
    said_untested: int
    recall: float
    precision: float
    recall_top: float
    """The same, over module-level functions and classes only (all the old tester reported)."""
    precision_top: float
    proposed: int
    green: int
    failed: int
    skeletons: int
    answer_bytes: int


def is_test_code(path: str) -> bool:
    """Test code, as `_tester_truth.py` sees it (toolz keeps its tests inside the package)."""
    parts = PurePosixPath(path).parts
    stem = parts[-1].split(".")[0]
    in_tests = bool({"tests", "test", "testing"} & set(parts[:-1]))
    return in_tests or stem.startswith("test_") or stem.endswith("_test") or stem == "conftest"


def ground_truth(name: str, cache: Path) -> set[tuple[str, str]]:
    """(path, qualname) of every package function or class the test code calls."""
    spec = SPECS[name]
    digest = hashlib.sha256(TRUTH_SCRIPT.read_bytes() + json.dumps(spec).encode())
    for path in sorted((FIXTURES / name).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(FIXTURES)).encode() + path.read_bytes())
    stored = cache / f"{name}-{digest.hexdigest()[:16]}.json"
    if not stored.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / name
            shutil.copytree(FIXTURES / name, copy)
            subprocess.run(
                [sys.executable, str(TRUTH_SCRIPT), str(copy), str(stored), json.dumps(spec)],
                cwd=copy,
                check=True,
                stdout=subprocess.DEVNULL,
                timeout=1800,
            )
    called = json.loads(stored.read_text())["called"]
    return {(c["file"], c["qualname"]) for c in called}


def universe(name: str) -> list[Unit]:
    """The public names that are scored (no exceptions, no entry points)."""
    root = FIXTURES / name
    package = root / SPECS[name]["package_dir"]
    paths = [str(p.relative_to(root)) for p in package.rglob("*.py")]
    sources = {p: (root / p).read_text("utf-8") for p in paths if not is_test_code(p)}
    pyproject = root / "pyproject.toml"
    catalog = build_catalog(sources, pyproject.read_text() if pyproject.exists() else "")
    return [u for u in catalog.public() if not (u.is_exception or u.is_entry)]


def is_tested(unit: Unit, called: set[tuple[str, str]]) -> bool:
    if (unit.path, unit.qualname) in called:
        return True
    return unit.kind == "class" and any(
        path == unit.path and qualname.startswith(unit.qualname + ".") for path, qualname in called
    )


async def run_tester(name: str) -> tuple[str, set[tuple[str, str]] | None]:
    """The tester's answer on the fixture, and (path, qualname) of what it calls untested."""
    agent: Agent[RepoDeps, str] = Agent(None, deps_type=RepoDeps, output_type=str)
    deps = RepoDeps(name, resolve_repository(FIXTURES, name))
    prompt = f"Which public names have no tests? Propose tests.\n\n## Repository\n{name}"
    result = await agent.run(
        prompt, deps=deps, model=local_model(AgentType.TESTER), toolsets=[REPOSITORY_TOOLSET]
    )
    try:
        from woolly_grpc.core.local.model import evidence_of
        from woolly_grpc.core.local.tester import assess
    except ImportError:  # the tester before issue 19: read its answer instead
        return result.output, None
    tools = list(REPOSITORY_TOOLSET.tools)
    found = assess(evidence_of(AgentType.TESTER, result.all_messages(), tools))
    said = {(u.path, u.qualname) for u in found.untested} if found else set()
    return result.output, said


def said_untested_from_text(answer: str, units: list[Unit]) -> set[tuple[str, str]]:
    """What an answer in the old format ("`path`: tested ...; untested `a` (line 1)") flags."""
    said = set()
    for path, untested in re.findall(r"^- `([^`]+)`: tested .*?; untested (.*)$", answer, re.M):
        for name in re.findall(r"`([^`]+)` \(line \d+\)", untested):
            said |= {(u.path, u.qualname) for u in units if u.path == path and u.qualname == name}
    return said


def run_proposals(name: str, answer: str) -> tuple[int, int, int, int]:
    """(proposed, passed, failed, skipped) test functions of the answer's proposed files."""
    files = shape(AgentType.TESTER, answer, []).test_files
    if not files:
        return 0, 0, 0, 0
    spec = SPECS[name]
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / name
        shutil.copytree(FIXTURES / name, copy)
        paths = []
        for test_file in files:
            target = copy / test_file.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(test_file.content)
            paths.append(test_file.path)
        report = Path(scratch) / "report.xml"
        env_path = ":".join(str(copy / p) for p in spec.get("sys_path", ["."]))
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:asyncio",
             "--timeout=20",
             f"--junitxml={report}", "--rootdir", str(copy), *paths],
            cwd=copy,
            stdin=subprocess.DEVNULL,
            env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=600,
            check=False,
        )  # fmt: skip
        if not report.exists():
            return sum(c.content.count("\ndef test_") for c in files), 0, 0, 0
        cases = ET.parse(report).getroot().iter("testcase")
        outcomes = [next((c.tag for c in case), "passed") for case in cases]
    proposed = len(outcomes)
    failed = sum(o in ("failure", "error") for o in outcomes)
    skipped = outcomes.count("skipped")
    return proposed, proposed - failed - skipped, failed, skipped


def _rates(truly: set[tuple[str, str]], said: set[tuple[str, str]]) -> tuple[float, float]:
    """(recall, precision) of "untested"."""
    hits = len(truly & said)
    return round(hits / len(truly), 3) if truly else 1.0, round(
        hits / len(said), 3
    ) if said else 1.0


def evaluate(name: str, cache: Path) -> Score:
    units = universe(name)
    called = ground_truth(name, cache)
    truly = {(u.path, u.qualname) for u in units if not is_tested(u, called)}
    answer, said = asyncio.run(run_tester(name))
    if said is None:
        said = said_untested_from_text(answer, units)
    said &= {(u.path, u.qualname) for u in units}
    top = {(u.path, u.qualname) for u in units if u.kind in ("function", "class")}
    proposed, green, failed, skipped = run_proposals(name, answer)
    package = FIXTURES / name / SPECS[name]["package_dir"]
    lines = sum(
        len(p.read_text("utf-8").splitlines())
        for p in package.rglob("*.py")
        if not is_test_code(str(p.relative_to(FIXTURES / name)))
    )
    return Score(
        name, lines, len(units), len(truly), len(said),
        *_rates(truly, said), *_rates(truly & top, said & top),
        proposed, green, failed, skipped, len(answer.encode()),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(SPECS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "tester-eval")
    args = parser.parse_args()
    scores = [evaluate(name, args.cache) for name in ([args.only] if args.only else SPECS)]
    print(
        "| package | lines | names | untested (truth) | said untested | recall | precision "
        "| top-level recall / precision | proposed | green | failed | skeletons | answer |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for s in scores:
        real = s.proposed - s.skeletons
        rate = f" ({s.green / real:.0%} of {real})" if real else ""
        print(
            f"| {s.package} | {s.source_lines} | {s.names} | {s.truly_untested} | "
            f"{s.said_untested} | {s.recall:.1%} | {s.precision:.1%} | "
            f"{s.recall_top:.1%} / {s.precision_top:.1%} | {s.proposed} | "
            f"{s.green}{rate} | {s.failed} | {s.skeletons} | {s.answer_bytes / 1024:.1f} KB |"
        )
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in scores], indent=2))


if __name__ == "__main__":
    main()
