"""Rows a statement read, from SQLite's own statement counters, for a stdlib `sqlite3` connection.

What Turso bills, and sqld reports as `rows_read`, is libSQL's `LIBSQL_STMTSTATUS_ROWS_READ`
(`libsql-server/src/connection/program.rs` reads it after each statement). libSQL's SQLite
bumps it at every successful `Next`/`Prev` of a cursor, at every cursor positioning (`Rewind`,
`Last`, `Seek*`, `SeekRowid`/`NotExists`) and by the entries of a bare `COUNT(*)` (`Count`).

The system SQLite has no such counter, and Python's `sqlite3` exposes no statement handle, so
this module reads what stock SQLite does keep, through its C API (the library the `_sqlite3`
module is linked to, found through that module itself so it is the same copy):

- Every successful `Next`/`Prev` does `aCounter[P5]++`, on the same line where libSQL bumps its
  counter. P5 is 0 for a loop with constraints (an index range, a rowid list),
  `SQLITE_STMTSTATUS_FULLSCAN_STEP` for a full scan and `SQLITE_STMTSTATUS_AUTOINDEX` while an
  automatic index is built, so slots 0, 1 and 3 together are libSQL's step count. Slot 0 is not
  a documented op of `sqlite3_stmt_status`, but without `SQLITE_ENABLE_API_ARMOR` (Debian's and
  the official Python images' builds) the call returns that slot as it does the others.
- The positionings are not counted by stock SQLite. In the store's statements each one
  starts a scan or fetches one row by key, about one per row returned or changed, so
  `rows_read = steps + max(rows returned, rows changed)`. By the opcodes each statement runs,
  that is within about 2x of libSQL's figure on the store's statements (an estimate: no sqld
  runs here to compare with) and, like it, grows with every row a statement scans, which is
  what the tests and the bench compare. The uncapped queue count of a 50,000-row backlog gives
  50,000 here, as it did on a real sqld.
- A bare `SELECT COUNT(*) FROM t` (libSQL adds the table's entries) reads as 0 here; the store
  never sends one.

The connection's `sqlite3 *` is the first field after the object header of CPython's
`pysqlite_Connection` (3.11 to 3.13; 3.11 added the limit calls the check uses). Anywhere
else, or if the handle does not answer as the connection does, `open_counters` returns None and
rows read are not reported.
"""

from __future__ import annotations

import ctypes
import sqlite3
import sys
from dataclasses import dataclass

_STEP_SLOTS = (0, 1, 3)  # constrained loops, FULLSCAN_STEP, AUTOINDEX


def _library() -> ctypes.CDLL | None:
    if sys.implementation.name != "cpython" or not (3, 11) <= sys.version_info[:2] <= (3, 13):
        return None
    try:
        import _sqlite3  # noqa: PLC0415  # only to find the library it links

        lib = ctypes.CDLL(_sqlite3.__file__)
        lib.sqlite3_libversion.restype = ctypes.c_char_p
        lib.sqlite3_next_stmt.restype = ctypes.c_void_p
        lib.sqlite3_next_stmt.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.sqlite3_sql.restype = ctypes.c_char_p
        lib.sqlite3_sql.argtypes = [ctypes.c_void_p]
        lib.sqlite3_stmt_status.restype = ctypes.c_int
        lib.sqlite3_stmt_status.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.sqlite3_limit.restype = ctypes.c_int
        lib.sqlite3_limit.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError, ImportError):
        return None
    if lib.sqlite3_libversion() != sqlite3.sqlite_version.encode():
        return None
    return lib


_LIB = _library()


@dataclass(frozen=True, slots=True)
class StatementCounters:
    """Reads the counters of one connection's prepared statements."""

    lib: ctypes.CDLL
    db: int

    def steps(self, sql: str) -> int:
        """Next/Prev steps of `sql` since the last call for it, and start it again at 0.

        Python's statement cache keeps one prepared statement per SQL text, so the statement
        just run is found by its text among the connection's live statements.
        """
        wanted = sql.encode()
        stmt: int | None = None
        while True:
            stmt = self.lib.sqlite3_next_stmt(self.db, stmt)
            if not stmt:
                return 0
            if self.lib.sqlite3_sql(stmt) == wanted:
                return sum(self.lib.sqlite3_stmt_status(stmt, op, 1) for op in _STEP_SLOTS)


def open_counters(conn: sqlite3.Connection) -> StatementCounters | None:
    """Counters for `conn`, or None where they cannot be read safely (see the module doc)."""
    if _LIB is None or not isinstance(conn, sqlite3.Connection):
        return None
    db = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
    if not db:
        return None
    # The handle is this connection's if a limit set through Python reads back through C.
    # (No SQL here: a statement could find the file locked.)
    limit = sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER
    before = conn.getlimit(limit)
    conn.setlimit(limit, before - 1)
    try:
        if _LIB.sqlite3_limit(db, limit, -1) != before - 1:
            return None
    finally:
        conn.setlimit(limit, before)
    return StatementCounters(_LIB, db)


def rows_read(steps: int, returned: int, changed: int) -> int:
    """libSQL's figure as far as stock SQLite shows it (see the module doc)."""
    return steps + max(returned, changed)
