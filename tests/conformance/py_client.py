"""The conformance script through the `libsql` Python package (libsql-python).

`python py_client.py <url> <script-json>` prints one JSON document. It runs in its own process
because `libsql` holds the GIL while it waits for a remote answer: in the pytest process it
would freeze the test server's thread and never get one.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import libsql


def value(v: Any) -> dict[str, Any]:
    if v is None:
        return {"null": True}
    if isinstance(v, bool | int):
        return {"integer": str(int(v))}
    if isinstance(v, float):
        return {"float": v}
    if isinstance(v, str):
        return {"text": v}
    if isinstance(v, bytes):
        return {"blob": v.hex()}
    return {"unknown": repr(v)}


def arg(a: dict[str, Any]) -> Any:
    if "integer" in a:
        return int(a["integer"])
    if "blob" in a:
        return bytes.fromhex(a["blob"])
    return a.get("float", a.get("text"))


def run(conn: Any, sql: str, args: list[dict[str, Any]]) -> dict[str, Any]:
    cur = conn.execute(sql, tuple(arg(a) for a in args))
    rows = cur.fetchall() or []
    return {
        "columns": [d[0] for d in cur.description or ()],
        "rows": [[value(v) for v in row] for row in rows],
        "rows_affected": cur.rowcount,
        "last_insert_rowid": None if cur.lastrowid is None else str(cur.lastrowid),
    }


def main() -> None:
    url, script = sys.argv[1], json.loads(sys.argv[2])
    if url.startswith("file:"):
        conn = libsql.connect(url.removeprefix("file:"))
    else:
        conn = libsql.connect(url, auth_token=os.environ.get("TURSO_AUTH_TOKEN", ""))
    out: list[dict[str, Any]] = []
    for s in script:
        try:
            if s["kind"] == "execute":
                ok: Any = run(conn, s["sql"], s["args"])
                conn.commit()
            else:  # a batch is one transaction: every statement, or none
                try:
                    ok = [run(conn, t["sql"], t["args"]) for t in s["stmts"]]
                    conn.commit()
                except Exception:
                    conn.rollback()
                    raise
            out.append({"step": s["name"], "ok": ok})
        except Exception as e:
            out.append({"step": s["name"], "error": {"type": type(e).__name__, "message": str(e)}})
    conn.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
