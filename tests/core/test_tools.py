"""The built-in repository tools: what they return, and every way out of the repository refused."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import Agent, ModelRetry, RunContext
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.usage import RunUsage

from woolly_grpc.core._sandbox import withheld
from woolly_grpc.core.exceptions import InvalidInput, NotFound
from woolly_grpc.core.tools import (
    REPOSITORY_TOOLSET,
    RepoDeps,
    code_outline,
    list_files,
    read_file,
    repository_info,
    resolve_repository,
    search_code,
)

REPOS = Path(__file__).parents[1] / "fixtures" / "repos"
CALCULATOR = REPOS / "calculator"
CALCULATOR_FILES = [
    "README.md",
    "calculator/__init__.py",
    "calculator/cli.py",
    "calculator/core.py",
    "pyproject.toml",
    "tests/test_core.py",
]


def context(root: Path, name: str = "calculator") -> RunContext[RepoDeps]:
    """A RunContext like the one pydantic-ai hands a tool (only `deps` is read)."""
    return RunContext(deps=RepoDeps(name, root.resolve()), model=TestModel(), usage=RunUsage())


@pytest.fixture
def calc() -> RunContext[RepoDeps]:
    return context(CALCULATOR)


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A copy of the fixture repositories, with symlinks that lead out of `calculator`."""
    repos = tmp_path / "repos"
    shutil.copytree(REPOS, repos)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP SECRET: outside the repository\n")
    repo = repos / "calculator"
    (repo / "leak.txt").symlink_to(repos / "outside_secret.txt")
    (repo / "leakdir").symlink_to(outside, target_is_directory=True)
    (repo / "alias.py").symlink_to("calculator/core.py")  # inside the repository: allowed
    (repos / "escape").symlink_to(outside, target_is_directory=True)
    return repo


# --- resolve_repository -------------------------------------------------------------------


def test_resolve_repository_returns_the_resolved_directory() -> None:
    assert resolve_repository(REPOS, "calculator") == CALCULATOR.resolve()
    assert resolve_repository(REPOS, "empty_repo") == (REPOS / "empty_repo").resolve()


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        ".hidden",
        "a/b",
        "../calculator",
        "a\\b",
        "/etc",
        "calc\x00ulator",
        "calc\nulator",
        "x" * 101,
        "bad name",
        "résumé",
        "\uff43alculator",  # a fullwidth c
    ],
)
def test_resolve_repository_refuses_bad_names(name: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        resolve_repository(REPOS, name)
    [violation] = caught.value.violations
    assert violation.field == "repository_name"
    assert violation.description


def test_resolve_repository_missing_is_not_found() -> None:
    with pytest.raises(NotFound) as caught:
        resolve_repository(REPOS, "no-such-repo")
    assert (caught.value.kind, caught.value.name) == ("repository", "no-such-repo")


def test_resolve_repository_refuses_a_symlink_out_of_the_root(sandbox: Path) -> None:
    with pytest.raises(InvalidInput, match="outside"):
        resolve_repository(sandbox.parent, "escape")


def test_resolve_repository_refuses_a_plain_file(sandbox: Path) -> None:
    with pytest.raises(NotFound):
        resolve_repository(sandbox.parent, "outside_secret.txt")


# --- the tools on the fixture repository ----------------------------------------------------


def test_repository_info(calc: RunContext[RepoDeps]) -> None:
    info = repository_info(calc)
    assert info == {
        "name": "calculator",
        "file_count": 6,
        "total_bytes": sum((CALCULATOR / p).stat().st_size for p in CALCULATOR_FILES),
        "languages": {"Python": 4, "Markdown": 1, "TOML": 1},
        "top_level": ["README.md", "calculator/", "pyproject.toml", "tests/"],
        "readme": "README.md",
        "entry_points": ["pyproject.toml [project.scripts] calc = calculator.cli:main"],
        "test_files": 1,
    }


def test_repository_info_of_a_repository_without_code() -> None:
    info = repository_info(context(REPOS / "empty_repo", "empty_repo"))
    assert info["languages"] == {"Text": 1}
    assert (info["readme"], info["entry_points"], info["test_files"]) == (None, [], 0)


def test_list_files(calc: RunContext[RepoDeps]) -> None:
    assert list_files(calc) == CALCULATOR_FILES
    assert list_files(calc, pattern="*.py") == [p for p in CALCULATOR_FILES if p.endswith(".py")]
    assert list_files(calc, directory="calculator", pattern="c*") == [
        "calculator/cli.py",
        "calculator/core.py",
    ]
    assert list_files(calc, directory="./tests/") == ["tests/test_core.py"]


def test_list_files_skips_hidden_and_generated_directories(sandbox: Path) -> None:
    for junk in [".git/config", "node_modules/x/index.js", "calculator/__pycache__/core.pyc"]:
        (sandbox / junk).parent.mkdir(parents=True, exist_ok=True)
        (sandbox / junk).write_text("junk")
    for junk in [".venv", "venv", "dist", "build"]:
        (sandbox / junk).mkdir()
        (sandbox / junk / "skipped.py").write_text("x = 1\n")
    (sandbox / ".editorconfig").write_text("root = true\n")  # hidden files are listed
    (sandbox / ".env.example").write_text("A=1\n")  # ... but not `.env*`: they hold secrets
    files = list_files(context(sandbox))
    assert files == sorted([*CALCULATOR_FILES, ".editorconfig", "alias.py"])


def test_list_files_is_capped(sandbox: Path) -> None:
    many = sandbox / "many"
    many.mkdir()
    for i in range(1005):
        (many / f"f{i:04}.txt").touch()
    files = list_files(context(sandbox), directory="many")
    assert len(files) == 1001
    assert files[999] == "many/f0999.txt"
    assert files[-1].startswith("... 5 more files")


def test_read_file_line_window(calc: RunContext[RepoDeps]) -> None:
    lines = (CALCULATOR / "calculator/core.py").read_text().splitlines(keepends=True)
    assert read_file(calc, "calculator/core.py", start_line=26, max_lines=5) == "".join(
        lines[25:30]
    )
    assert read_file(calc, "calculator/core.py") == "".join(lines)
    assert read_file(calc, "calculator/core.py", start_line=107, max_lines=50) == lines[106]
    assert "fewer than 500 lines" in read_file(calc, "calculator/core.py", start_line=500)
    # A model may send any number: reading stops at the end of the file, not after 10**12 lines.
    huge = 10**12
    assert f"fewer than {huge} lines" in read_file(calc, "calculator/core.py", start_line=huge)


def test_read_file_caps_at_64_kib_and_says_how_to_go_on(sandbox: Path) -> None:
    line = "x" * 99 + "\n"
    (sandbox / "big.txt").write_text(line * 2000)
    ctx = context(sandbox)
    text = read_file(ctx, "big.txt", max_lines=2000)
    assert len(text.encode()) <= 64 * 1024
    shown = text.count(line)
    assert 600 < shown < 656
    note = (
        f"[truncated at 64 KiB; call read_file(path='big.txt', start_line={shown + 1}) to read on]"
    )
    assert text.endswith(note)
    assert read_file(ctx, "big.txt", start_line=shown + 1, max_lines=1) == line


def test_read_file_cuts_a_single_huge_line(sandbox: Path) -> None:
    (sandbox / "min.js").write_text("a" * 200_000 + "\nsecond line\n")
    text = read_file(context(sandbox), "min.js")
    assert len(text.encode()) <= 64 * 1024
    assert text.startswith("a" * 1000)
    assert "start_line=2" in text.splitlines()[-1]


def test_read_file_binary_and_invalid_utf8(sandbox: Path) -> None:
    (sandbox / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(100))
    (sandbox / "latin1.txt").write_bytes("café au lait\n".encode("latin-1"))
    ctx = context(sandbox)
    assert "binary file" in read_file(ctx, "logo.png")
    text = read_file(ctx, "latin1.txt")
    assert text.startswith("caf\ufffd au lait\n")
    assert "not valid UTF-8" in text


@pytest.mark.parametrize(
    ("path", "message"),
    [("calculator", "is a directory"), ("nope.py", "does not exist"), ("README.md", "at least 1")],
)
def test_read_file_asks_the_model_to_retry(
    calc: RunContext[RepoDeps], path: str, message: str
) -> None:
    with pytest.raises(ModelRetry, match=message):
        read_file(calc, path, start_line=0 if path == "README.md" else 1)


def test_search_code_is_literal_and_case_insensitive(calc: RunContext[RepoDeps]) -> None:
    hits = search_code(calc, "DEF DIVIDE")
    assert hits == ["calculator/core.py:26: def divide(a: float, b: float) -> float:"]
    everywhere = search_code(calc, "divide")
    assert [h.split(":")[0] for h in everywhere] == sorted(h.split(":")[0] for h in everywhere)
    assert 'tests/test_core.py:18: assert outcome["errors"] == [(1, "cannot divide by zero")]' in (
        everywhere
    )
    first_two = search_code(calc, "divide", directory="calculator", max_results=2)
    assert [hit.split(": ")[0] for hit in first_two] == [
        "calculator/__init__.py:3",
        "calculator/__init__.py:5",
        "... more matches not shown; narrow the query or directory",
    ]


@pytest.mark.parametrize("query", ["(.*", "[a-", "(a+)+$", "\\d+", ".*"])
def test_search_code_treats_regex_characters_literally(
    calc: RunContext[RepoDeps], query: str
) -> None:
    hits = search_code(calc, query)
    assert all(query.casefold() in hit.split(": ", 1)[1].casefold() for hit in hits)


def test_search_code_skips_binary_and_huge_files(sandbox: Path) -> None:
    (sandbox / "blob.bin").write_bytes(b"needle\x00\x01")
    (sandbox / "huge.txt").write_text("needle\n" + "x" * (1024 * 1024))
    (sandbox / "small.txt").write_text("a needle here\n")
    assert search_code(context(sandbox), "needle") == ["small.txt:1: a needle here"]


def test_search_code_refuses_an_empty_query(calc: RunContext[RepoDeps]) -> None:
    with pytest.raises(ModelRetry):
        search_code(calc, "   ")


def test_code_outline_of_python(calc: RunContext[RepoDeps]) -> None:
    outline = code_outline(calc, "./calculator/core.py")
    assert (outline["path"], outline["language"], outline["lines"]) == (
        "calculator/core.py",
        "python",
        107,
    )
    by_name = {d["qualname"]: d for d in outline["definitions"]}
    assert list(by_name) == [
        "add_numbers", "subtract", "multiply", "divide", "_round_result", "process_batch",
        "Accumulator", "Accumulator.__init__", "Accumulator.add", "Accumulator.reset",
        "Accumulator.average",
    ]  # fmt: skip
    assert by_name["process_batch"] == {
        "kind": "function",
        "name": "process_batch",
        "qualname": "process_batch",
        "line": 38,
        "end_line": 83,
        "lines": 46,
        "max_depth": 4,
        "params": ["operations", "stop_on_error", "precision", "verbose", "log"],
        "signature": (
            "def process_batch(operations: list[Operation], stop_on_error: bool = False, "
            "precision: int = 2, verbose: bool = False, log: list[str] | None = None) "
            "-> dict[str, list[object]]"
        ),
        "docstring": "Apply (operator, a, b) operations in order and collect results and errors.",
        "is_public": True,
        "blocks": [{"kind": "for", "line": 49, "end_line": 82}],
    }
    assert by_name["add_numbers"]["signature"] == "def add_numbers(a: float, b: float) -> float"
    assert (by_name["divide"]["max_depth"], by_name["multiply"]["docstring"]) == (1, "")
    assert by_name["_round_result"]["is_public"] is False
    assert by_name["Accumulator"]["kind"] == "class"
    assert by_name["Accumulator"]["params"] == ["start"]
    assert by_name["Accumulator.add"]["kind"] == "method"
    assert by_name["Accumulator.add"]["params"] == ["value"]
    assert by_name["Accumulator.add"]["is_public"] is True
    assert by_name["Accumulator.__init__"]["is_public"] is False


def test_code_outline_counts_nesting_and_private_classes(sandbox: Path) -> None:
    (sandbox / "nested.py").write_text(
        "class _Hidden:\n"
        "    def shown(self, *args, key=1, **rest):\n"
        "        while True:\n"
        "            with open('f') as f:\n"
        "                try:\n"
        "                    pass\n"
        "                except OSError:\n"
        "                    if f:\n"
        "                        break\n"
        "async def run(x, /, y):\n"
        "    match x:\n"
        "        case 1:\n"
        "            pass\n"
    )
    defs = {d["qualname"]: d for d in code_outline(context(sandbox), "nested.py")["definitions"]}
    assert defs["_Hidden.shown"]["max_depth"] == 4
    assert defs["_Hidden.shown"]["is_public"] is False  # a method of a private class
    assert defs["_Hidden.shown"]["params"] == ["args", "key", "rest"]
    assert defs["_Hidden.shown"]["signature"] == "def shown(self, *args, key=1, **rest)"
    assert defs["_Hidden.shown"]["blocks"] == [{"kind": "while", "line": 3, "end_line": 9}]
    assert defs["run"]["signature"] == "async def run(x, /, y)"
    assert defs["run"]["max_depth"] == 1


def test_code_outline_of_other_files_and_syntax_errors(sandbox: Path) -> None:
    (sandbox / "broken.py").write_text("def oops(:\n")
    ctx = context(sandbox)
    readme = code_outline(ctx, "README.md")
    assert readme == {"path": "README.md", "language": "markdown", "lines": 22}
    broken = code_outline(ctx, "broken.py")
    assert (broken["path"], broken["language"]) == ("broken.py", "python")
    assert "cannot parse" in broken["error"]
    assert "definitions" not in broken


# --- escapes ----------------------------------------------------------------------------------

OUT = "leaves the repository"
LINK = "through a symlink"
ODD = "unusual Unicode or control characters"
ESCAPES = [
    ("../outside_secret.txt", OUT),
    ("calculator/../../outside_secret.txt", OUT),
    ("/etc/passwd", OUT),
    ("leak.txt", LINK),
    ("leakdir", LINK),
    ("leakdir/secret.txt", LINK),
    ("calculator\x00.py", "NUL byte"),
    ("..\\outside_secret.txt", "'\\' is not allowed"),
    ("calculator\\core.py", "'\\' is not allowed"),
    ("\uff0e\uff0e\uff0foutside_secret.txt", ODD),  # fullwidth "../"
    ("\u2024\u2024/outside_secret.txt", ODD),  # one-dot leaders, "." after NFKC
    ("calculator/core.py\u202e", ODD),  # a right-to-left override
    ("calculator/core.py\n", ODD),
]


def call_with_path(ctx: RunContext[RepoDeps], tool: str, path: str) -> object:
    if tool == "read_file":
        return read_file(ctx, path)
    if tool == "code_outline":
        return code_outline(ctx, path)
    if tool == "list_files":
        return list_files(ctx, directory=path)
    return search_code(ctx, "secret", directory=path)


@pytest.mark.parametrize("tool", ["read_file", "code_outline", "list_files", "search_code"])
@pytest.mark.parametrize(("path", "reason"), ESCAPES)
def test_every_tool_refuses_paths_out_of_the_repository(
    sandbox: Path, tool: str, path: str, reason: str
) -> None:
    with pytest.raises(ModelRetry) as caught:
        call_with_path(context(sandbox), tool, path)
    assert reason in caught.value.message


def test_absolute_path_to_the_secret_is_refused(sandbox: Path) -> None:
    with pytest.raises(ModelRetry, match="leaves the repository"):
        read_file(context(sandbox), str(sandbox.parent / "outside_secret.txt"))


def test_walkers_never_follow_symlinks_out(sandbox: Path) -> None:
    ctx = context(sandbox)
    files = list_files(ctx)
    assert "leak.txt" not in files
    assert not any(f.startswith("leakdir") for f in files)
    assert "alias.py" in files  # a symlink to a file inside the repository is fine
    assert search_code(ctx, "TOP SECRET") == []
    info = repository_info(ctx)
    assert "leak.txt" not in info["top_level"]
    assert "leakdir/" not in info["top_level"]
    assert info["file_count"] == len(CALCULATOR_FILES) + 1
    assert (
        read_file(ctx, "alias.py", max_lines=1) == '"""Arithmetic helpers and a batch runner."""\n'
    )


def test_symlink_loops_are_skipped_or_refused(sandbox: Path) -> None:
    (sandbox / "loop_a").symlink_to(sandbox / "loop_b")
    (sandbox / "loop_b").symlink_to(sandbox / "loop_a")
    (sandbox.parent / "looped").symlink_to(sandbox.parent / "looped")
    ctx = context(sandbox)
    assert not any(f.startswith("loop_") for f in list_files(ctx))
    assert not any(e.startswith("loop_") for e in repository_info(ctx)["top_level"])
    with pytest.raises(ModelRetry):
        read_file(ctx, "loop_a")
    with pytest.raises(InvalidInput):
        resolve_repository(sandbox.parent, "looped")


def test_a_pyproject_symlinked_out_is_not_read(sandbox: Path, tmp_path: Path) -> None:
    (sandbox / "pyproject.toml").unlink()
    evil = tmp_path / "outside" / "pyproject.toml"
    evil.write_text('[project.scripts]\nstolen = "x:y"\n[project]\nname = "x"\n')
    (sandbox / "pyproject.toml").symlink_to(evil)
    assert repository_info(context(sandbox))["entry_points"] == []


# --- through pydantic-ai ---------------------------------------------------------------------


async def test_tools_through_pydantic_ai_with_a_retry_for_an_escape() -> None:
    seen: list[ModelMessage] = []

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen[:] = messages
        returns = [p for p in messages[-1].parts if isinstance(p, ToolReturnPart)]
        if not returns:
            return ModelResponse(
                parts=[
                    ToolCallPart("read_file", {"path": "../outside_secret.txt"}, tool_call_id="a"),
                    ToolCallPart("repository_info", {}, tool_call_id="b"),
                ]
            )
        if len(seen) == 3:
            calls = {"path": "calculator/core.py", "start_line": 26, "max_lines": 1}
            return ModelResponse(parts=[ToolCallPart("read_file", calls, tool_call_id="c")])
        return ModelResponse(parts=[TextPart(str(returns[0].content))])

    agent = Agent(FunctionModel(model), deps_type=RepoDeps, toolsets=[REPOSITORY_TOOLSET])
    result = await agent.run("go", deps=RepoDeps("calculator", CALCULATOR.resolve()))
    assert result.output == "def divide(a: float, b: float) -> float:\n"
    returns = {
        p.tool_call_id: p
        for m in result.all_messages()
        for p in m.parts
        if isinstance(p, ToolReturnPart)
    }
    assert returns["a"].outcome == "retried"
    assert "leaves the repository" in str(returns["a"].content)
    assert "TOP SECRET" not in str(returns["a"].content)
    assert returns["b"].outcome == "success"
    assert returns["b"].model_response_str().startswith('{"name":"calculator",')


async def test_the_toolset_describes_its_tools_to_the_model() -> None:
    captured: dict[str, Any] = {}

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        captured.update({t.name: t for t in info.function_tools})
        return ModelResponse(parts=[TextPart("ok")])

    agent = Agent(FunctionModel(model), deps_type=RepoDeps, toolsets=[REPOSITORY_TOOLSET])
    await agent.run("go", deps=RepoDeps("calculator", CALCULATOR.resolve()))
    assert sorted(captured) == [
        "code_outline", "list_files", "read_file", "repository_info", "search_code",
    ]  # fmt: skip
    for tool in captured.values():
        assert tool.description and len(tool.description) > 20
        for name, schema in tool.parameters_json_schema["properties"].items():
            assert schema.get("description"), (tool.name, name)
    read = captured["read_file"].parameters_json_schema
    assert read["required"] == ["path"]
    assert read["properties"]["max_lines"]["default"] == 400


# --- secrets, VCS internals, and files that are not the repository's own (contract §4) --------

SECRET = "SECRET-VALUE-7f3a"
SECRET_FILES = [
    ".env",
    ".env.production",
    ".envrc",
    "config/.env.local",
    ".envs/.production/.django",  # cookiecutter-django's layout
    "server.pem",
    "tls/server.KEY",
    "client.p12",
    "id_rsa",
    "deploy/id_ed25519_sk",
    "id_deploy",
    "id_rsa.bak",
    ".netrc",
    ".npmrc",
    ".pypirc",
    ".pgpass",
    ".git-credentials",
    ".ssh/config",
    ".aws/credentials",
    ".git/config",
    ".git/HEAD",
    ".hg/hgrc",
    ".svn/entries",
    "CVS/Root",
    "sub/.git",  # a submodule's gitlink file
]


@pytest.fixture
def secrets_repo(sandbox: Path) -> Path:
    """The sandbox with a secret in every file the tools must never touch."""
    for rel in SECRET_FILES:
        (sandbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (sandbox / rel).write_text(f"token = {SECRET}\n")
    (sandbox / "id_rsa.pub").write_text("ssh-ed25519 AAAA public\n")
    (sandbox / "id_utils.py").write_text("def new_id():\n    return 1\n")
    (sandbox / "env.py").write_text("ENV = 'dev'\n")
    return sandbox


@pytest.mark.parametrize(
    ("name", "is_file", "withheld_"),
    [
        (".env", True, True),
        (".env.example", True, True),
        (".envs", False, True),
        (".git", False, True),
        (".GIT", False, True),
        (".git", True, True),
        ("_darcs", False, True),
        ("id_rsa", True, True),
        ("id_ecdsa", True, True),
        ("id_rsa_github", True, True),
        ("id_rsa.old", True, True),
        ("cert.PEM", True, True),
        ("id_rsa.pub", True, False),
        ("id_utils.py", True, False),
        ("id_map.json", True, False),
        ("id_generators", False, False),  # a directory: the key rule is for files
        ("keys.py", True, False),
        ("environment.yml", True, False),
        (".gitignore", True, False),
        (".github", False, False),
        ("README.md", True, False),
    ],
)
def test_the_withheld_rule(name: str, is_file: bool, withheld_: bool) -> None:
    assert (withheld(name, is_file=is_file) is not None) is withheld_


def test_secret_files_are_never_listed(secrets_repo: Path) -> None:
    ctx = context(secrets_repo)
    files = list_files(ctx)
    assert set(files) == {*CALCULATOR_FILES, "alias.py", "id_rsa.pub", "id_utils.py", "env.py"}
    info = repository_info(ctx)
    assert not {".env", "id_rsa", "id_deploy", "server.pem", "CVS/"} & set(info["top_level"])
    assert info["file_count"] == len(files)


@pytest.mark.parametrize("rel", SECRET_FILES)
def test_secret_files_are_never_read_by_path(secrets_repo: Path, rel: str) -> None:
    ctx = context(secrets_repo)
    for tool in (read_file, code_outline):
        with pytest.raises(ModelRetry, match="is not available") as caught:
            tool(ctx, rel)
        assert SECRET not in caught.value.message


@pytest.mark.parametrize("directory", [".", ".git", ".envs", ".ssh", "CVS", "sub/.git"])
def test_secret_files_are_never_searched(secrets_repo: Path, directory: str) -> None:
    ctx = context(secrets_repo)
    try:
        hits = search_code(ctx, SECRET, directory=directory)
    except ModelRetry as refused:
        assert "is not available" in refused.message
    else:
        assert hits == []


def test_a_symlink_to_a_secret_is_withheld(secrets_repo: Path) -> None:
    (secrets_repo / "settings.txt").symlink_to(".env")
    (secrets_repo / "gitconfig").symlink_to(".git/config")
    (secrets_repo / "gitdir").symlink_to(".git", target_is_directory=True)
    (secrets_repo / "key.txt").symlink_to("id_rsa")
    ctx = context(secrets_repo)
    assert not {"settings.txt", "gitconfig", "key.txt"} & set(list_files(ctx))
    assert "gitdir/" not in repository_info(ctx)["top_level"]
    assert search_code(ctx, SECRET) == []
    for path in ["settings.txt", "gitconfig", "gitdir/config", "key.txt"]:
        with pytest.raises(ModelRetry, match="is not available"):
            read_file(ctx, path)


def test_fifos_are_skipped_and_refused(sandbox: Path) -> None:
    os.mkfifo(sandbox / "pipe.txt")
    (sandbox / "link_to_pipe.txt").symlink_to("pipe.txt")
    ctx = context(sandbox)
    # A FIFO opened for reading blocks until a writer comes: if the tools opened it, this
    # test would hang until its timeout rather than fail.
    assert search_code(ctx, "divide", max_results=500)
    assert not {"pipe.txt", "link_to_pipe.txt"} & set(list_files(ctx))
    for path in ["pipe.txt", "link_to_pipe.txt"]:
        with pytest.raises(ModelRetry, match="not a regular file"):
            read_file(ctx, path)
        with pytest.raises(ModelRetry, match="not a regular file"):
            code_outline(ctx, path)


def test_devices_are_refused(sandbox: Path) -> None:
    try:
        os.mknod(sandbox / "zero", 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's twin
    except PermissionError:
        pytest.skip("making a device needs root")
    ctx = context(sandbox)
    assert "zero" not in list_files(ctx)
    assert search_code(ctx, "divide")  # reading /dev/zero would never end
    with pytest.raises(ModelRetry, match="not a regular file"):
        read_file(ctx, "zero")


def test_hard_links_are_refused(sandbox: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside" / "passwd"
    outside.write_text(f"root:{SECRET}:0:0\n")
    os.link(outside, sandbox / "passwd.txt")
    ctx = context(sandbox)
    assert "passwd.txt" not in list_files(ctx)
    assert search_code(ctx, SECRET) == []
    with pytest.raises(ModelRetry, match="other hard links"):
        read_file(ctx, "passwd.txt")


LONG_PATHS = ["a" * 5000, "a/" * 600, "x" * 256 + ".py", "src/" + "y" * 300]


@pytest.mark.parametrize("tool", ["read_file", "code_outline", "list_files", "search_code"])
@pytest.mark.parametrize("path", LONG_PATHS, ids=["5000", "deep", "name256", "nested300"])
def test_a_path_too_long_is_a_retry(calc: RunContext[RepoDeps], tool: str, path: str) -> None:
    with pytest.raises(ModelRetry, match="too long") as caught:
        call_with_path(calc, tool, path)
    assert path not in caught.value.message


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("README.md/inside", "does not exist"),
        ("calculator/nope/x.py", "does not exist"),
        ("", "is a directory"),
        ("a" * 255, "does not exist"),  # the longest name Linux allows is merely missing
    ],
)
def test_other_bad_paths_are_retries(calc: RunContext[RepoDeps], path: str, said: str) -> None:
    for tool in (read_file, code_outline):
        with pytest.raises(ModelRetry, match=said):
            tool(calc, path)


def test_list_files_refuses_a_huge_pattern(calc: RunContext[RepoDeps]) -> None:
    with pytest.raises(ModelRetry, match="pattern"):
        list_files(calc, pattern="*" * 10_000)
