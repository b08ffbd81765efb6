"""What Python's `sqlite3` does not expose about a statement, read by preparing it ourselves.

sqld reads declared column types, parameter names and the read-only/EXPLAIN flags from the
prepared statement (`sqlite3_column_decltype` and friends), and its own parser rejects a syntax
error before anything runs. The stdlib module hides its statement handles, so we prepare the
same SQL (never step it) on a read-only side connection to the same file, through the very
`libsqlite3` that `_sqlite3` links. That connection sees the committed schema only: a statement
on a table created inside a stream's still-open transaction, or on a TEMP table, gets no
metadata (decltype null, as for an expression).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import threading
from dataclasses import dataclass

_OPEN_READONLY = 0x1
_OPEN_URI = 0x40
_SYNTAX_HINTS = ("syntax error", "incomplete input", "unrecognized token")
_CACHE_LIMIT = 2000
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)


def _load() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
    p, c, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    for fn, args, res in (
        ("sqlite3_open_v2", [c, ctypes.POINTER(p), i, c], i),
        ("sqlite3_close_v2", [p], i),
        ("sqlite3_busy_timeout", [p, i], i),
        ("sqlite3_errmsg", [p], c),
        ("sqlite3_prepare_v2", [p, c, i, ctypes.POINTER(p), ctypes.POINTER(p)], i),
        ("sqlite3_finalize", [p], i),
        ("sqlite3_column_count", [p], i),
        ("sqlite3_column_name", [p, i], c),
        ("sqlite3_column_decltype", [p, i], c),
        ("sqlite3_bind_parameter_count", [p], i),
        ("sqlite3_bind_parameter_name", [p, i], c),
        ("sqlite3_stmt_readonly", [p], i),
        ("sqlite3_stmt_isexplain", [p], i),
    ):
        f = getattr(lib, fn)
        f.argtypes, f.restype = args, res
    return lib


_LIB = _load()


def is_syntax_error(message: str) -> bool:
    return any(h in message for h in _SYNTAX_HINTS)


def is_blank(sql: str) -> bool:
    return not _COMMENTS.sub("", sql).strip(" \t\r\n;")


@dataclass(frozen=True)
class StmtMeta:
    cols: tuple[tuple[str | None, str | None], ...]  # (name, decltype)
    params: tuple[str | None, ...]
    is_readonly: bool
    is_explain: bool
    more: bool  # text follows the first statement


@dataclass(frozen=True)
class PrepareError:
    message: str

    @property
    def syntax(self) -> bool:
        return is_syntax_error(self.message)


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode()


class MetaReader:
    """Prepares statements on a read-only side connection; successes are cached per SQL text."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, StmtMeta] = {}
        self._db = ctypes.c_void_p()
        uri = f"file:{path}?mode=ro".encode()
        if _LIB.sqlite3_open_v2(uri, ctypes.byref(self._db), _OPEN_READONLY | _OPEN_URI, None):
            raise OSError(f"cannot open {path} read-only for statement metadata")
        _LIB.sqlite3_busy_timeout(self._db, 1000)

    def schema_changed(self) -> None:
        with self._lock:
            self._cache.clear()

    def close(self) -> None:
        with self._lock:
            _LIB.sqlite3_close_v2(self._db)
            self._db = ctypes.c_void_p()

    def prepare(self, sql: str) -> StmtMeta | PrepareError:
        """Metadata of the first statement in `sql` (blank text is a PrepareError too)."""
        with self._lock:
            meta = self._cache.get(sql)
            if meta is not None:
                return meta
            out = self._prepare(sql)
            if isinstance(out, StmtMeta):
                if len(self._cache) >= _CACHE_LIMIT:  # SQL with literals never repeats
                    self._cache.clear()
                self._cache[sql] = out
            return out

    def _prepare(self, sql: str) -> StmtMeta | PrepareError:
        raw = sql.encode()
        buf = ctypes.create_string_buffer(raw)
        stmt, tail = ctypes.c_void_p(), ctypes.c_void_p()
        rc = _LIB.sqlite3_prepare_v2(
            self._db, buf, len(raw), ctypes.byref(stmt), ctypes.byref(tail)
        )
        try:
            if rc:
                return PrepareError(_text(_LIB.sqlite3_errmsg(self._db)) or "prepare failed")
            if not stmt:
                return PrepareError("no statement")
            consumed = (tail.value or ctypes.addressof(buf)) - ctypes.addressof(buf)
            cols = tuple(
                (
                    _text(_LIB.sqlite3_column_name(stmt, n)),
                    _text(_LIB.sqlite3_column_decltype(stmt, n)),
                )
                for n in range(_LIB.sqlite3_column_count(stmt))
            )
            params = tuple(
                _text(_LIB.sqlite3_bind_parameter_name(stmt, n))
                for n in range(1, _LIB.sqlite3_bind_parameter_count(stmt) + 1)
            )
            return StmtMeta(
                cols=cols,
                params=params,
                is_readonly=bool(_LIB.sqlite3_stmt_readonly(stmt)),
                is_explain=bool(_LIB.sqlite3_stmt_isexplain(stmt)),
                more=not is_blank(raw[consumed:].decode(errors="replace")),
            )
        finally:
            _LIB.sqlite3_finalize(stmt)
