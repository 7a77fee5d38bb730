"""The local answers that describe the repository: the summarizer's and the documentation's."""

from __future__ import annotations

import re
from typing import Any

from .evidence import Evidence, module_name, outline_path, public_definitions
from .markdown import Answer, bullets, clip, plural


def summarizer(ev: Evidence) -> Answer:
    """What the repository holds, where its code starts and what its README says."""
    info, name, files = ev.info, ev.prompt.repository, ev.files
    if not (info or files):
        summary = f"I could not look inside `{name}`, so I cannot summarise it."
        return Answer(summary, [], ["Allow `repository_info` or `list_files`."], [], False)
    count = info.get("file_count", len(files))
    languages = info.get("languages") or {}
    spread = ", ".join(f"{lang} ({n})" for lang, n in list(languages.items())[:5])
    tests = info.get("test_files", len(ev.tests))
    overview = f"`{name}` holds {plural(count, 'file')}" + (f": {spread}" if spread else "")
    top = info.get("top_level") or sorted({f.split("/")[0] for f in files})
    entries = info.get("entry_points") or [f for f in files if f.endswith("__main__.py")]
    body = [
        f"## Overview\n{overview}. Test files: {tests}.",
        "## Layout\n" + (bullets(f"`{entry}`" for entry in top[:20]) or "Empty."),
        "## Entry points\n" + (bullets(f"`{e}`" for e in entries) or "None found."),
    ]
    title, paragraph = _readme_gist(ev)
    if paragraph:
        body.append(f"## What the README says\n**{title or ev.readme}**: {paragraph}")
    if ev.outlines:
        body.append("## Main modules\n" + bullets(_module_line(o) for o in ev.outlines))
    by_size = sorted(ev.outlines, key=lambda o: (-len(public_definitions(o)), outline_path(o)))
    main = [f"`{outline_path(o)}`" for o in by_size if public_definitions(o)][:3]
    about = f" ({title}: {clip(_first_sentence(paragraph), 120)})" if paragraph else ""
    where = f"; its main code is in {', '.join(main)}" if main else ""
    language = next(iter(languages), "mixed")
    summary = f"`{name}` holds {plural(count, 'file')}, mostly {language}{about}{where}."
    actions = [f"Start reading at {main[0]}." if main else "Read the top-level files first."]
    actions += [f"Try the entry point `{entries[0]}`."] if entries else []
    actions.append(
        "Check that the README's usage section still matches the code."
        if paragraph
        else "Write a README that says what the project does and how to run it."
    )
    if tests < len(ev.sources):
        actions.append(f"Add tests: {plural(tests, 'test file')} for {len(ev.sources)} modules.")
    sources = [ev.readme] if paragraph and ev.readme else []
    sources += [outline_path(o) for o in ev.outlines]
    sources += ["pyproject.toml"] if any(e.startswith("pyproject") for e in entries) else []
    return Answer(summary, body, actions, sources or files[:5], True)


def documentation(ev: Evidence) -> Answer:
    """A Markdown reference of every public name, and the ones without a docstring."""
    if not ev.outlines:
        summary = f"I found no Python modules in `{ev.prompt.repository}` to document."
        return Answer(summary, [], ["Add Python modules, then document them."], [], False)
    _, paragraph = _readme_gist(ev)
    body = [f"# `{ev.prompt.repository}` reference" + (f"\n\n{paragraph}" if paragraph else "")]
    undocumented, count = [], 0
    for outline in ev.outlines:
        path, public = outline_path(outline), [d for d in outline["definitions"] if d["is_public"]]
        entries = [f"## `{module_name(path)}` (`{path}`)"] if public else []
        for d in public:
            doc = d["docstring"] or "_No docstring._"
            entries.append(f"### `{d['qualname']}`\n```python\n{d['signature']}\n```\n{doc}")
            undocumented += [] if d["docstring"] else [f"`{path}:{d['line']}` `{d['qualname']}`"]
        count += len(public)
        body += ["\n\n".join(entries)] if entries else []
    if undocumented:
        body.append("## Undocumented public names\n" + bullets(undocumented))
    summary = (
        f"Reference for {plural(len(ev.outlines), 'module')} with {plural(count, 'public name')}"
        f"; {len(undocumented)} of them {'has' if len(undocumented) == 1 else 'have'} no docstring."
    )
    actions = (
        [f"Add docstrings to the {len(undocumented)} undocumented names."] if undocumented else []
    )
    actions += ["Save this as `docs/reference.md` and link it from the README."]
    actions += ["Re-run the documentation agent after changing public signatures."]
    sources = [ev.readme] if paragraph and ev.readme else []
    return Answer(summary, body, actions, sources + [outline_path(o) for o in ev.outlines], True)


def _readme_gist(ev: Evidence) -> tuple[str, str]:
    """The README's title and first paragraph (headings, code and images left out)."""
    text = ev.text_of(ev.readme)
    title = next((ln[2:].strip() for ln in text.splitlines() if ln.startswith("# ")), "")
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.strip().splitlines()]
        if lines and not lines[0].startswith(("#", "```", "<", "!", "[", "|", "---")):
            return title, " ".join(lines)
    return title, ""


def _module_line(outline: dict[str, Any]) -> str:
    public = public_definitions(outline)
    names = ", ".join(f"`{d['name']}` (line {d['line']})" for d in public[:8])
    more = f" and {len(public) - 8} more" if len(public) > 8 else ""
    return (
        f"`{outline_path(outline)}` ({outline['lines']} lines): {names or 'no public names'}{more}"
    )


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
