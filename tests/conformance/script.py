"""The one script every client runs, against the test server and against a `file:` database."""

from __future__ import annotations

from typing import Any

BIG = 2**53 + 1  # a float64 cannot hold it: an integer decoded as a double comes back wrong
HUGE = 2**63 - 1


def _x(name: str, sql: str, *args: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "execute", "name": name, "sql": sql, "args": list(args)}


def _i(v: int) -> dict[str, Any]:
    return {"integer": str(v)}


SCRIPT: list[dict[str, Any]] = [
    _x(
        "create",
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
        "score REAL, big INTEGER, note TEXT, data BLOB)",
    ),
    _x(
        "insert",
        "INSERT INTO jobs (name, score, big, note, data) VALUES (?, ?, ?, ?, ?)",
        {"text": "a"},
        {"float": 1.5},
        _i(BIG),
        {"text": "héllo ✓"},
        {"blob": "0102ff00"},
    ),
    _x(
        "insert null",
        "INSERT INTO jobs (name, score, big, note, data) VALUES (?, ?, ?, ?, ?)",
        {"text": "b"},
        {"float": -0.25},
        _i(HUGE),
        {"null": True},
        {"null": True},
    ),
    {
        "kind": "batch",
        "name": "batch that rolls back",
        "stmts": [
            {"sql": "INSERT INTO jobs (name, big) VALUES ('c', 3)", "args": []},
            {"sql": "UPDATE jobs SET big = 0 WHERE name = 'a'", "args": []},
            {"sql": "INSERT INTO jobs (name) VALUES ('a')", "args": []},
        ],
    },
    {
        "kind": "batch",
        "name": "batch that commits",
        "stmts": [
            {"sql": "INSERT INTO jobs (name, big) VALUES ('d', 4)", "args": []},
            {"sql": "SELECT count(*) AS n FROM jobs", "args": []},
        ],
    },
    _x(
        "update returning",
        "UPDATE jobs SET score = score * 2, note = upper(note) WHERE name = ? "
        "RETURNING id, name, score, big, note",
        {"text": "a"},
    ),
    _x(
        "select all",
        "SELECT id, name, score, big, note, data, big + 1 AS expr FROM jobs ORDER BY id",
    ),
    _x("constraint violation", "INSERT INTO jobs (name) VALUES ('b')"),
    _x("not null violation", "INSERT INTO jobs (score) VALUES (1.0)"),
    _x("syntax error", "SELEC * FROM jobs"),
    _x("unknown table", "SELECT * FROM nowhere"),
    _x("count after errors", "SELECT count(*) AS n, sum(big = 0) AS zeroed FROM jobs"),
]
