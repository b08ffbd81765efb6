"""Hrana stream requests on a real SQLite connection, answered the way sqld answers them.

Error codes and messages follow libsql-server (`hrana/stmt.rs`, `hrana/batch.rs`,
`hrana/http/request.rs`): SQLite failures carry the *base* result code (`SQLITE_CONSTRAINT`,
not `SQLITE_CONSTRAINT_PRIMARYKEY`), a syntax error is `SQL_PARSE_ERROR` (sqld's parser rejects
it before SQLite runs anything, so a batch with one bad step runs no step at all), a prepare
error that points into the SQL is `SQL_INPUT_ERROR`. Protocol violations raise ProtocolError,
which fails the whole HTTP request with 400, as in sqld.
"""

from __future__ import annotations

import base64
import re
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from controller.store.sqlite_counters import open_counters, rows_read

from .faults import STMT_ACTIONS, STMT_ERRORS, Faults
from .sqlite_meta import MetaReader, PrepareError, StmtMeta, is_blank, is_syntax_error

HRANA2, HRANA3 = 2, 3
MAX_STORED_SQLS = 50
MAX_STORED_SQL_BYTES = 5000
REQUEST_TYPES = frozenset(
    {
        "close",
        "execute",
        "batch",
        "sequence",
        "describe",
        "store_sql",
        "close_sql",
        "get_autocommit",
    }
)
_BASE_CODES = {
    1: "SQLITE_ERROR", 2: "SQLITE_INTERNAL", 3: "SQLITE_PERM", 4: "SQLITE_ABORT",
    5: "SQLITE_BUSY", 6: "SQLITE_LOCKED", 7: "SQLITE_NOMEM", 8: "SQLITE_READONLY",
    9: "SQLITE_INTERRUPT", 10: "SQLITE_IOERR", 11: "SQLITE_CORRUPT", 12: "SQLITE_NOTFOUND",
    13: "SQLITE_FULL", 14: "SQLITE_CANTOPEN", 15: "SQLITE_PROTOCOL", 17: "SQLITE_SCHEMA",
    18: "SQLITE_TOOBIG", 19: "SQLITE_CONSTRAINT", 20: "SQLITE_MISMATCH", 21: "SQLITE_MISUSE",
    22: "SQLITE_NOLFS", 23: "SQLITE_AUTH", 25: "SQLITE_RANGE", 26: "SQLITE_NOTADB",
}  # fmt: skip
_SCHEMA_WORDS = re.compile(r"^\s*(CREATE|DROP|ALTER)\b", re.I)
_NAMED_IN_MESSAGE = re.compile(r"no such (?:table|column|function): (\S+)")


class ProtocolError(Exception):
    """A request a correct client never sends: HTTP 400, text body, the stream is closed."""


class HranaError(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.proto = {"message": message, "code": code}


@dataclass
class Stats:
    requests: int = 0
    statements: int = 0
    texts: Counter[str] = field(default_factory=Counter)
    """Statements by SQL text, so a bench can tell which of its statements went where."""


class CountedConnection(sqlite3.Connection):
    """A connection that carries its statement counters, for `rows_read` as sqld reports it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counters = open_counters(self)


@dataclass
class Stream:
    """One sqld stream: a connection (None once closed) and its stored SQL texts."""

    db: sqlite3.Connection | None
    sqls: dict[int, str] = field(default_factory=dict)


@dataclass
class Context:
    meta: MetaReader
    faults: Faults
    stats: Stats
    version: int


def decode_value(v: dict[str, Any]) -> Any:
    kind = v.get("type")
    if kind == "null":
        return None
    if kind == "integer":
        return int(v["value"])
    if kind == "float":
        return float(v["value"])
    if kind == "text":
        return str(v["value"])
    if kind == "blob":
        text = str(v["base64"]).rstrip("=")
        return base64.b64decode(text + "=" * (-len(text) % 4))
    raise ProtocolError("Value type not recognized")


def encode_value(v: Any) -> dict[str, Any]:
    if v is None:
        return {"type": "null"}
    if isinstance(v, int):
        return {"type": "integer", "value": str(v)}
    if isinstance(v, float):
        return {"type": "float", "value": v}
    if isinstance(v, str):
        return {"type": "text", "value": v}
    return {"type": "blob", "base64": base64.b64encode(v).decode().rstrip("=")}


def sqlite_error(e: sqlite3.Error, sql: str) -> HranaError:
    message = str(e)
    if isinstance(e, sqlite3.ProgrammingError | sqlite3.InterfaceError):
        if "one statement at a time" in message:
            return HranaError("SQL string contains more than one statement", "SQL_MANY_STATEMENTS")
        return HranaError(f"Arguments do not match SQL parameters: {message}", "ARGS_INVALID")
    return error_from_sqlite(message, getattr(e, "sqlite_errorcode", 1), sql)


def error_from_sqlite(message: str, code: int, sql: str) -> HranaError:
    base = _BASE_CODES.get(code & 0xFF, "SQLITE_UNKNOWN")
    if base == "SQLITE_ERROR" and is_syntax_error(message):
        return HranaError(f"SQL string could not be parsed: {message}", "SQL_PARSE_ERROR")
    named = _NAMED_IN_MESSAGE.search(message)
    offset = sql.lower().find(named.group(1).split(".")[-1].lower()) if named else -1
    if base == "SQLITE_ERROR" and offset >= 0:
        # sqld reports the byte offset SQLite points at; we find the name it complains about.
        return HranaError(f"SQL input error: {message} (at offset {offset})", "SQL_INPUT_ERROR")
    return HranaError(f"SQLite error: {message}", base)


def _real_affinity(decltype: str | None) -> bool:
    """SQLite's affinity rules (datatype3.html, 3.1), REAL case."""
    d = (decltype or "").upper()
    if not d or "INT" in d or any(w in d for w in ("CHAR", "CLOB", "TEXT", "BLOB")):
        return False
    return any(w in d for w in ("REAL", "FLOA", "DOUB"))


def resolve_sql(sql: str | None, sql_id: int | None, sqls: dict[int, str]) -> str:
    if sql is not None and sql_id is not None:
        raise ProtocolError("Either `sql` or `sql_id` are required, but not both")
    if sql is not None:
        return sql
    if sql_id is None:
        raise ProtocolError("Either `sql` or `sql_id` are required")
    if sql_id not in sqls:
        raise ProtocolError(f"SQL text {sql_id} not found")
    return sqls[sql_id]


def check_parses(sql: str, meta: MetaReader) -> StmtMeta | None:
    """sqld parses before it runs: one statement, valid syntax. Metadata if it prepares here."""
    if is_blank(sql):
        raise HranaError("SQL string does not contain any statement", "SQL_NO_STATEMENT")
    prepared = meta.prepare(sql)
    if isinstance(prepared, PrepareError):
        if prepared.syntax:
            msg = f"SQL string could not be parsed: {prepared.message}"
            raise HranaError(msg, "SQL_PARSE_ERROR")
        return None
    if prepared.more:
        raise HranaError("SQL string contains more than one statement", "SQL_MANY_STATEMENTS")
    return prepared


def _params(stmt: dict[str, Any]) -> list[Any] | dict[str, Any]:
    args, named = stmt.get("args") or [], stmt.get("named_args") or []
    if args and named:
        raise HranaError(
            "Specifying both positional and named arguments is not supported",
            "ARGS_BOTH_POSITIONAL_AND_NAMED",
        )
    if named:
        return {a["name"].lstrip(":@$"): decode_value(a["value"]) for a in named}
    return [decode_value(v) for v in args]


def execute_stmt(db: sqlite3.Connection, stmt: dict[str, Any], sql: str, ctx: Context) -> Any:
    meta = check_parses(sql, ctx.meta)
    params = _params(stmt)
    counters = getattr(db, "counters", None)
    started = time.perf_counter()
    ctx.stats.statements += 1
    ctx.stats.texts[sql] += 1
    try:
        cur = db.execute(sql, params)
        rows = cur.fetchall()
    except sqlite3.Error as e:
        if counters is not None:
            counters.steps(sql)  # start the next run's count at 0
        raise sqlite_error(e, sql) from None
    if _SCHEMA_WORDS.match(sql):
        ctx.meta.schema_changed()
    names = [d[0] for d in cur.description or ()]
    decltypes = [c[1] for c in meta.cols] if meta and len(meta.cols) == len(names) else []
    real = [i for i, d in enumerate(decltypes) if _real_affinity(d)]
    if real:
        # The system SQLite (3.40) hands out RETURNING values without the column's affinity
        # (an integral REAL comes back as an integer); libSQL's SQLite, sqld's, does not.
        rows = [
            tuple(float(v) if i in real and type(v) is int else v for i, v in enumerate(r))
            for r in rows
        ]
    want_rows = stmt.get("want_rows")
    changed = max(cur.rowcount, 0)
    # sqld sends libSQL's own counts; these are SQLite's (controller/store/sqlite_counters.py:
    # how, and how close). Rows written are the rows changed (sqld adds index entries).
    steps = counters.steps(sql) if counters is not None else 0
    return {
        "cols": [
            {"name": n, "decltype": decltypes[i] if decltypes else None}
            for i, n in enumerate(names)
        ],
        "rows": [] if want_rows is False else [[encode_value(v) for v in r] for r in rows],
        "affected_row_count": changed,
        "last_insert_rowid": None if cur.lastrowid is None else str(cur.lastrowid),
        "replication_index": None,
        "rows_read": rows_read(steps, len(rows), changed),
        "rows_written": changed,
        "query_duration_ms": (time.perf_counter() - started) * 1000,
    }


def _cond(cond: dict[str, Any], db: sqlite3.Connection, out: dict[str, list[Any]]) -> bool:
    kind = cond.get("type")
    if kind == "ok":
        return out["step_results"][cond["step"]] is not None
    if kind == "error":
        return out["step_errors"][cond["step"]] is not None
    if kind == "not":
        return not _cond(cond["cond"], db, out)
    if kind == "and":
        return all(_cond(c, db, out) for c in cond["conds"])
    if kind == "or":
        return any(_cond(c, db, out) for c in cond["conds"])
    return not db.in_transaction  # is_autocommit, checked in _validate_cond


def _validate_cond(cond: dict[str, Any], before: int, version: int) -> None:
    kind = cond.get("type")
    if kind in ("ok", "error") and not 0 <= int(cond["step"]) < before:
        raise ProtocolError("Invalid reference to step in a batch condition")
    if kind == "not":
        _validate_cond(cond["cond"], before, version)
    elif kind in ("and", "or"):
        for c in cond["conds"]:
            _validate_cond(c, before, version)
    elif kind == "is_autocommit" and version < HRANA3:
        raise ProtocolError(
            "BatchCond of type `is_autocommit` is only supported in protocol version hrana3 "
            "and higher"
        )
    elif kind not in ("ok", "error", "not", "and", "or", "is_autocommit"):
        raise ProtocolError("BatchCond type not recognized")


def execute_batch(
    stream: Stream, db: sqlite3.Connection, batch: dict[str, Any], ctx: Context
) -> Any:
    steps = batch["steps"]
    sqls = []
    for i, step in enumerate(steps):
        stmt = step["stmt"]
        sqls.append(resolve_sql(stmt.get("sql"), stmt.get("sql_id"), stream.sqls))
        if step.get("condition") is not None:
            _validate_cond(step["condition"], i, ctx.version)
    for sql in sqls:  # sqld turns the whole batch into a program before running any step
        check_parses(sql, ctx.meta)
    out: dict[str, list[Any]] = {"step_results": [], "step_errors": []}
    for step, sql in zip(steps, sqls, strict=True):
        result = error = None
        if step.get("condition") is None or _cond(step["condition"], db, out):
            try:
                result = execute_stmt(db, step["stmt"], sql, ctx)
            except HranaError as e:
                error = e.proto
        out["step_results"].append(result)
        out["step_errors"].append(error)
    return {**out, "replication_index": None}


def split_statements(sql: str) -> list[str]:
    """Complete statements in `sql`, in order (semicolons inside strings or triggers kept)."""
    out, start = [], 0
    for i, ch in enumerate(sql):
        if ch == ";" and sqlite3.complete_statement(sql[start : i + 1]):
            out.append(sql[start : i + 1])
            start = i + 1
    out.append(sql[start:])
    return [s for s in out if not is_blank(s)]


def execute_sequence(db: sqlite3.Connection, sql: str, ctx: Context) -> None:
    stmts = split_statements(sql)
    for s in stmts:
        prepared = ctx.meta.prepare(s)
        if isinstance(prepared, PrepareError) and prepared.syntax:
            raise HranaError(
                f"SQL string could not be parsed: {prepared.message}", "SQL_PARSE_ERROR"
            )
    for s in stmts:
        execute_stmt(db, {"want_rows": False}, s, ctx)


def describe(sql: str, ctx: Context) -> Any:
    meta = check_parses(sql, ctx.meta)
    if meta is None:
        prepared = ctx.meta.prepare(sql)
        msg = prepared.message if isinstance(prepared, PrepareError) else "cannot describe"
        raise error_from_sqlite(msg, 1, sql)
    return {
        "params": [{"name": p} for p in meta.params],
        "cols": [{"name": n, "decltype": d} for n, d in meta.cols],
        "is_explain": meta.is_explain,
        "is_readonly": meta.is_readonly,
    }


def sql_of(req: dict[str, Any], sqls: dict[int, str]) -> str:
    """All SQL text a request carries (stored texts resolved), for matching planned faults."""
    stmts = (
        [req["stmt"]]
        if "stmt" in req
        else [s["stmt"] for s in req.get("batch", {}).get("steps", [])]
    )
    texts = [s.get("sql") or sqls.get(s.get("sql_id", -1), "") for s in stmts]
    texts.append(req.get("sql") or sqls.get(req.get("sql_id", -1), ""))
    return "\n".join(t for t in texts if t)


def handle(stream: Stream, req: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """One stream request -> a StreamResult (`ok` with a response, or `error`)."""
    try:
        return {"type": "ok", "response": {"type": req["type"], **_respond(stream, req, ctx)}}
    except HranaError as e:
        return {"type": "error", "error": e.proto}


def _db(stream: Stream) -> sqlite3.Connection:
    if stream.db is None:
        raise ProtocolError("Stream for this baton was closed")
    return stream.db


def _respond(stream: Stream, req: dict[str, Any], ctx: Context) -> dict[str, Any]:
    kind = req["type"]
    if kind == "close":
        if stream.db is not None:
            stream.db.close()
        stream.db = None
        return {}
    if kind == "store_sql":
        if req["sql_id"] in stream.sqls:
            raise ProtocolError(f"SQL text {req['sql_id']} already exists")
        if len(stream.sqls) >= MAX_STORED_SQLS:
            count = len(stream.sqls)
            msg = f"The server already stores {count} SQL texts, it cannot store more"
            raise HranaError(msg, "SQL_STORE_TOO_MANY")
        if len(req["sql"].encode()) > MAX_STORED_SQL_BYTES:
            raise HranaError("The statement is too large to be stored", "SQL_STORE_TOO_LARGE")
        stream.sqls[req["sql_id"]] = req["sql"]
        return {}
    if kind == "close_sql":
        stream.sqls.pop(req["sql_id"], None)
        return {}
    db = _db(stream)
    if kind == "get_autocommit":
        if ctx.version < HRANA3:
            raise ProtocolError(
                "The `get_autocommit` request is only supported in protocol version hrana3 "
                "and higher"
            )
        return {"is_autocommit": not db.in_transaction}
    if kind == "describe":
        return {
            "result": describe(resolve_sql(req.get("sql"), req.get("sql_id"), stream.sqls), ctx)
        }
    fault = ctx.faults.take(STMT_ACTIONS, sql_of(req, stream.sqls))
    if fault is not None:
        if fault.action == "transaction_timeout" and db.in_transaction:
            db.rollback()
        raise HranaError(**STMT_ERRORS[fault.action])
    if kind == "execute":
        stmt = req["stmt"]
        sql = resolve_sql(stmt.get("sql"), stmt.get("sql_id"), stream.sqls)
        return {"result": execute_stmt(db, stmt, sql, ctx)}
    if kind == "batch":
        return {"result": execute_batch(stream, db, req["batch"], ctx)}
    execute_sequence(db, resolve_sql(req.get("sql"), req.get("sql_id"), stream.sqls), ctx)
    return {}
