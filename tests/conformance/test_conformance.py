"""Clients nobody here wrote vouch for the test server: the same script through `@libsql/client`
(Node) and `libsql` (Python), once against the server and once against a `file:` database, and
the answers must match.

What legitimately differs between a remote and a local database is normalised away, and said
here: sqld words errors its own way ("SQLite error: ...", SQL_PARSE_ERROR for a syntax error),
so errors are compared by kind and by SQLite's own sentence, and the server's codes are checked
against sqld's separately; a statement that returns rows has no meaningful rowid or change count
in either client's file mode, so those two are compared for statements without result columns.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devcluster.hrana_server import HranaServer, running_server

from .script import BIG, HUGE, SCRIPT

HERE = Path(__file__).parent
ROOT = HERE.parent.parent

# What sqld answers for the script's failing steps (libsql-server hrana/stmt.rs).
SQLD_CODES = {
    "batch that rolls back": "SQLITE_CONSTRAINT",
    "constraint violation": "SQLITE_CONSTRAINT",
    "not null violation": "SQLITE_CONSTRAINT",
    "syntax error": "SQL_PARSE_ERROR",
    "unknown table": "SQL_INPUT_ERROR",
}
_PY_HRANA = re.compile(r'message: "(?P<message>.*)", code: "(?P<code>\w+)"')
_CODE_PREFIX = re.compile(r"^(?:[A-Z_]+: )+")
_SQLD_WORDING = re.compile(
    r"^(?:SQLite error: |SQL string could not be parsed: |SQL input error: )|( \(at offset \d+\))$"
)


@pytest.fixture(scope="session")
def node_modules() -> Path:
    subprocess.run(["bash", str(ROOT / "devcluster" / "npm-deps.sh")], check=True)
    return HERE / "node_modules"


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with running_server(str(tmp_path / "served.db")) as s:
        yield s


def run_client(
    client: str, url: str, script: list[dict[str, Any]] = SCRIPT, token: str = ""
) -> list[dict[str, Any]]:
    env = os.environ | {"TURSO_AUTH_TOKEN": token}
    if client == "node":
        cmd = ["node", str(HERE / "client.mjs"), url, json.dumps(script)]
    else:
        # In its own process: `libsql` holds the GIL while it waits for the server's answer.
        cmd = [sys.executable, str(HERE / "py_client.py"), url, json.dumps(script)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, f"{client} client failed:\n{done.stderr}"
    return list(json.loads(done.stdout))


def error_of(raw: dict[str, Any]) -> tuple[str | None, str]:
    """(code if the client tells it, SQLite's own sentence)."""
    message, code = raw["message"], raw.get("code")
    wrapped = _PY_HRANA.search(message)
    if wrapped:
        message, code = wrapped["message"].replace('\\"', '"'), wrapped["code"]
    return code, _SQLD_WORDING.sub("", _CODE_PREFIX.sub("", message))


def kind_of(sentence: str) -> str:
    for kind, marker in (("constraint", "constraint failed"), ("syntax", "syntax error")):
        if marker in sentence:
            return kind
    return "missing" if "no such" in sentence else "other"


def normalise(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for s in steps:
        if "error" in s:
            sentence = error_of(s["error"])[1]
            out.append({"step": s["step"], "error": kind_of(sentence), "sqlite": sentence})
            continue
        results = s["ok"] if isinstance(s["ok"], list) else [s["ok"]]
        norm = []
        for r in results:
            keep = {k: r[k] for k in ("columns", "column_types", "rows") if k in r}
            if not r["columns"]:
                keep |= {k: r[k] for k in ("rows_affected", "last_insert_rowid")}
            norm.append(keep)
        out.append({"step": s["step"], "ok": norm})
    return out


@pytest.mark.parametrize("client", ["node", "python"])
def test_server_answers_like_a_file_database(
    client: str, server: HranaServer, tmp_path: Path, node_modules: Path
) -> None:
    served = run_client(client, server.url("http"))
    local = run_client(client, f"file:{tmp_path / 'local.db'}")

    assert normalise(served) == normalise(local)
    codes = {s["step"]: error_of(s["error"])[0] for s in served if "error" in s}
    assert codes == SQLD_CODES
    # The script did what it says (so matching is not two empty answers agreeing).
    by_step = {s["step"]: s for s in served}
    rows = by_step["select all"]["ok"]["rows"]
    assert [r[1] for r in rows] == [{"text": "a"}, {"text": "b"}, {"text": "d"}]
    assert rows[0][5] == {"blob": "0102ff00"} and rows[1][4] == {"null": True}
    assert rows[0][2] == {"float": 3.0}  # REAL stays REAL, also through RETURNING
    if client == "node":  # libsql-python sends Python ints beyond 2**53 as floats
        assert rows[0][3] == {"integer": str(BIG)} and rows[1][3] == {"integer": str(HUGE)}
    returning = by_step["update returning"]["ok"]
    assert returning["columns"] == ["id", "name", "score", "big", "note"]
    assert returning["rows"][0][:3] == [{"integer": "1"}, {"text": "a"}, {"float": 3.0}]
    assert by_step["count after errors"]["ok"]["rows"] == [[{"integer": "3"}, {"integer": "0"}]]
    if client == "node":
        assert returning["column_types"] == ["INTEGER", "TEXT", "REAL", "INTEGER", "TEXT"]
        insert = by_step["insert"]["ok"]
        assert (insert["rows_affected"], insert["last_insert_rowid"]) == (1, "1")


@pytest.mark.parametrize("client", ["node", "python"])
def test_clients_authenticate_with_the_bearer_token(
    client: str, tmp_path: Path, node_modules: Path
) -> None:
    one = [SCRIPT[0]]
    with running_server(str(tmp_path / "auth.db"), token="t0ken") as server:
        denied = run_client(client, server.url("http"), one, token="wrong")
        allowed = run_client(client, server.url("http"), one, token="t0ken")
    assert "error" in denied[0] and "401" in denied[0]["error"]["message"]
    assert "ok" in allowed[0]
