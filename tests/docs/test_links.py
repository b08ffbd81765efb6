"""Nothing points outside the repository, and every relative Markdown link resolves."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.docs.sentences import ROOT

# References to files that live outside this repository (a sibling checkout, a design or style
# document never committed, a developer's own machine).
OUTSIDE = re.compile(
    r"\.\./shared\b|\bDESIGN\.md\b|\bSTYLE\.md\b|(?<![\w.])/work/|\bthe design(?:'s)?\b"
    r"|\(design:|design doc",
    re.IGNORECASE,
)
# This file and the module it tests name the patterns themselves.
SELF = {"tests/docs/test_links.py"}
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
SKIP = ("http://", "https://", "mailto:", "#")


def tracked() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [p for p in out.split("\0") if p and (ROOT / p).is_file()]


def text_of(path: str) -> str | None:
    try:
        return (ROOT / path).read_text()
    except UnicodeDecodeError:
        return None


def outside_references(paths: list[str]) -> list[str]:
    found = []
    for path in paths:
        text = text_of(path) if path not in SELF else None
        for n, line in enumerate((text or "").splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path}:{n}: {line.strip()[:120]}")
    return found


def broken_links(markdown: dict[str, str]) -> list[str]:
    broken = []
    for path, text in markdown.items():
        prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # code is not a link
        for target in LINK.findall(prose):
            if target.startswith(SKIP):
                continue
            file = target.split("#", 1)[0]
            resolved = ((ROOT / path).parent / file).resolve()
            if not resolved.is_relative_to(ROOT.resolve()):
                broken.append(f"{path}: {target} leaves the repository")
                continue
            if not resolved.exists():
                broken.append(f"{path}: {target} does not exist")
    return broken


def test_no_file_refers_outside_the_repository() -> None:
    found = outside_references(tracked())
    assert not found, "references to files outside the repository:\n" + "\n".join(found)


def test_every_relative_markdown_link_resolves() -> None:
    markdown = {p: (ROOT / p).read_text() for p in tracked() if p.endswith(".md")}
    untracked_docs = [p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")]
    markdown |= {p: (ROOT / p).read_text() for p in untracked_docs}
    assert "README.md" in markdown
    broken = broken_links(markdown)
    assert not broken, "\n".join(broken)


def test_the_checks_can_fail(tmp_path: Path) -> None:
    assert outside_references([]) == []
    bad = {
        "docs/x.md": "see [the design](../../shared/DESIGN.md), [gone](nowhere.md) and "
        "[ok](../README.md#quick-start), [web](https://example.com/a.md)"
    }
    assert broken_links(bad) == [
        "docs/x.md: ../../shared/DESIGN.md leaves the repository",
        "docs/x.md: nowhere.md does not exist",
    ]
    for line in ("see ../shared/notes", "per DESIGN.md", "cd /work/main", "(design: clocks)"):
        assert OUTSIDE.search(line), line
    assert not OUTSIDE.search("keyword-only builders take many arguments by design")
