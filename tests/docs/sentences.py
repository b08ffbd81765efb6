"""Every error sentence the product can emit, found in its source, as recognizable stems.

A sentence is born where one of the product's error types is built with text: a row error
(`RunnerError` and kin, `PayloadError`, the lifecycle's `Fail`/`Retry`, the runner's
`FailureMessage`), a store error (`StoreError`, a `Fault` description), a start-up error
(`SettingsError`), and the `ValueError`s whose text a payload or URL check passes on. The text
is a literal, an f-string or a `+`/implicit concatenation of them; its *stem* is its longest
literal run, which survives whatever the placeholders hold. A call that passes text through
(`Retry(message.error)`) makes no new sentence and is skipped.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Callable -> which argument holds the sentence (an int: positional index; a str: keyword).
SINKS: dict[str, int | str] = {
    "RunnerError": 0,
    "PermanentError": 0,
    "TransientError": 0,
    "PayloadError": 0,
    "classify_os_error": 1,
    "s3_error": 1,
    "Retry": 0,
    "Fail": 1,
    "FailureMessage": "error",
    "failed": 0,  # runner.__main__: a FailureMessage built where pydantic is imported late
    "StoreError": 0,
    "StoreUnavailable": 0,
    "SettingsError": 0,
    "Fault": 3,
    "KubeError": 0,
    "HranaError": 0,
    "AddressRefused": 0,
    "SpawnRefused": 0,
}
# Functions that build a sentence (or a part a sentence shows) and return it.
BUILDERS = re.compile(r"(_sentence|_message|_reason)$")
# ValueError counts only where its text reaches a person as it is: payload and URL checks.
VALUE_ERROR_MODULES = ("runner/payloads.py", "runner/rules.py", "controller/store/backend.py")
PACKAGES = ("controller", "runner")
# A literal run this long is recognizable alone; a sentence whose runs are all shorter must
# appear with every run, in order ("invalid <type> payload: <why>").
MIN_STEM = 10
_EDGE = " \t\n:;,.'\"-—"
_MARKER = re.compile(r"\((?:permanent|transient)\)")


@dataclass(frozen=True)
class Sentence:
    stem: str  # what a person recognizes: the longest literal run, or all runs joined by "…"
    pattern: str  # the regex the troubleshooting table must match
    where: str  # path:line

    def __str__(self) -> str:
        return f"{self.where}: {self.stem!r}"


def _literal_runs(node: ast.expr) -> list[str] | None:
    """The literal pieces of a sentence expression, or None when it is not built here."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.Constant)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal_runs(node.left), _literal_runs(node.right)
        if left is None and right is None:
            return None
        return (left or []) + (right or [])
    return None


def _trim(run: str) -> str:
    """Without the punctuation and the half of a bracket that joined it to a placeholder."""
    return run.strip(_EDGE).lstrip(")").rstrip("(").strip(_EDGE)


def _stem(runs: list[str]) -> tuple[str, str] | None:
    pieces = [_trim(re.sub(r"\s+", " ", _MARKER.sub("", r))) for r in runs]
    pieces = [p for p in pieces if len(p) >= 3]
    best = max(pieces, key=len, default="")
    if len(best) >= MIN_STEM:
        return best, re.escape(best)
    if not pieces or sum(map(len, pieces)) < 6:
        return None  # only punctuation and markers around text made elsewhere
    return " … ".join(pieces), ".+?".join(re.escape(p) for p in pieces)


def _callee(call: ast.Call) -> str | None:
    f = call.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        return f.attr
    return None


def _argument(call: ast.Call, where: int | str) -> ast.expr | None:
    if isinstance(where, int):
        return call.args[where] if len(call.args) > where else None
    return next((k.value for k in call.keywords if k.arg == where), None)


def _sentence_expressions(tree: ast.AST, path: str) -> list[ast.expr]:
    value_errors = path.endswith(VALUE_ERROR_MODULES)
    exprs: list[ast.expr | None] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _callee(node)
            if name in SINKS:
                exprs.append(_argument(node, SINKS[name]))
            elif name == "ValueError" and value_errors:
                exprs.append(_argument(node, 0))
        elif isinstance(node, ast.FunctionDef) and BUILDERS.search(node.name):
            for ret in ast.walk(node):
                if isinstance(ret, ast.Return) and ret.value is not None:
                    value = ret.value
                    exprs.append(value.elts[0] if isinstance(value, ast.Tuple) else value)
    return [e for e in exprs if e is not None]


def sentences_in(source: str, path: str) -> list[Sentence]:
    found = []
    for expr in _sentence_expressions(ast.parse(source), path):
        runs = _literal_runs(expr)
        stem = _stem(runs) if runs else None
        if stem:
            found.append(Sentence(stem[0], stem[1], f"{path}:{expr.lineno}"))
    return found


_CHART_FAIL = re.compile(r'\b(?:fail|required)\s+"((?:[^"\\]|\\.)+)"')


def chart_sentences() -> list[Sentence]:
    """The chart's own refusals: `fail "…"` and `required "…"` in its templates."""
    found = []
    for path in sorted((ROOT / "charts").rglob("templates/*")):
        rel = path.relative_to(ROOT).as_posix()
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for m in _CHART_FAIL.finditer(line):
                stem = _stem([m.group(1)])
                if stem:
                    found.append(Sentence(stem[0], stem[1], f"{rel}:{n}"))
    return found


def product_sentences() -> list[Sentence]:
    found = chart_sentences()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            found += sentences_in(path.read_text(), rel)
    return found


def troubleshooting_table(markdown: str) -> str:
    """The rows of the table under the "Troubleshooting" heading, with Markdown's code spans
    and escapes undone so a stem matches the text a person reads."""
    start = markdown.index("## Troubleshooting")
    end = markdown.find("\n## ", start + 1)
    section = markdown[start : end if end != -1 else None]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return re.sub(r"\s+", " ", "\n".join(rows).replace("`", "").replace("\\|", "|"))


def missing(sentences: list[Sentence], table: str) -> list[Sentence]:
    return [s for s in sentences if not re.search(s.pattern, table)]
