"""The two ways the store reaches its database, behind one small interface.

- `file:` — stdlib `sqlite3` on one dedicated thread. SQLite releases the GIL while it works or
  waits on a lock, so the event loop keeps running (measured in bench/bench_file_backend.py
  against `libsql`'s embedded mode, which does not). The connection uses `timeout=0`: a locked
  database answers `database is locked` at once and the store retries with short sleeps, so
  the one thread is never parked inside SQLite.
- `libsql://`, `https://`, `http://` (and `wss://`, `ws://`, mapped to the same host's HTTP) —
  Hrana over HTTP (`controller/store/hrana.py`), asyncio-native.

A `ws(s)://` URL may instead name sqld's dedicated Hrana WebSocket listener
(`--hrana-listen-addr`), which drops any plain HTTP request unanswered: that is refused at open
with a sentence naming the HTTP address (`_refuse_websocket_only`), rather than retried as an
outage. We do not speak Hrana over WebSocket as a second transport: Turso and sqld serve Hrana
over HTTP on every deployment (sqld's HTTP listener is always on), so a second protocol would
add a transport to keep correct for no address that the first cannot reach.
"""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import aiohttp

from controller.store.hrana import HranaClient, HranaError, ResultSet
from controller.store.sqlite_counters import StatementCounters, open_counters, rows_read

Args = list[Any]

__all__ = ["Args", "Backend", "ResultSet", "describe_url", "http_url", "open_backend", "split_url"]


class Backend(Protocol):
    async def execute(self, sql: str, args: Args) -> ResultSet: ...
    async def batch(self, stmts: list[tuple[str, Args]]) -> list[ResultSet]:
        """All statements in one transaction."""
        ...

    async def reset(self) -> None: ...
    async def close(self) -> None: ...


def split_url(url: str) -> tuple[str, str | None]:
    """Return the URL without an `authToken` query parameter, and that token.

    The token must not ride along in a URL that aiohttp may quote in an exception.
    """
    parts = urllib.parse.urlsplit(url)
    token: str | None = None
    kept = []
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key == "authToken":
            token = value or None
        else:
            kept.append((key, value))
    query = urllib.parse.urlencode(kept)
    return urllib.parse.urlunsplit(parts._replace(query=query)), token


def describe_url(url: str) -> str:
    """A form of the URL safe for logs: scheme, host and path only."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    if parts.scheme == "file":
        return f"file:{parts.path}"
    return f"{parts.scheme}://{host}{port}{parts.path}"


_HTTP_SCHEME = {"https": "https", "http": "http", "libsql": "https", "wss": "https", "ws": "http"}


def http_url(url: str) -> str:
    """The Hrana-over-HTTP base URL for a remote libSQL URL (without `authToken`).

    `libsql://host` is Turso's form and means TLS (`?tls=0` turns it off for a local sqld, as
    in the official clients); `wss://`/`ws://` name the same server's HTTP endpoint.
    """
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    scheme = _HTTP_SCHEME[parts.scheme]
    if parts.scheme == "libsql" and query.pop("tls", "1") == "0":
        scheme = "http"
    if query:
        raise ValueError(f"unknown URL parameter(s): {', '.join(sorted(query))}")
    return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


STATEMENT_CACHE = 16
"""Prepared statements the `file:` backend's connection keeps (sqlite3's default is 128)."""


class FileBackend:
    """One SQLite connection, used only from its own thread, in autocommit mode."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audiojob-store")
        self._conn: sqlite3.Connection | None = None
        self._counters: StatementCounters | None = None

    async def start(self) -> None:
        try:
            await self._call(self._open)
        except BaseException:
            # Cancelled or failed start-up: the connection still opens in the thread; close
            # it right after, so nothing is left behind.
            await self.close()
            raise

    def _open(self) -> None:
        # A small statement cache: a batch statement's text differs with its row count (a
        # heartbeat or a cycle's Job names for 1 row, 2 rows, ...), and each prepared one stays
        # cached; at the default 128 the prepared programs of big batches grew the controller's
        # memory by ~20 MiB over a long run (bench/README.md, run L). Preparing again costs
        # tens of microseconds, once or twice a cycle.
        self._conn = sqlite3.connect(
            self._path,
            timeout=0,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=STATEMENT_CACHE,
        )
        # Rows read as SQLite's statement counters show them, for the same figures the Hrana
        # backend gets from the server (controller/store/sqlite_counters.py says how close).
        self._counters = open_counters(self._conn)

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _run(self, sql: str, args: Args) -> ResultSet:
        assert self._conn is not None
        try:
            cur = self._conn.execute(sql, tuple(args))
            rows = [tuple(r) for r in cur.fetchall()]
        except BaseException:
            if self._counters is not None:
                self._counters.steps(sql)  # start the next run's count at 0
            raise
        cols = tuple(d[0] for d in cur.description or ())
        changed = max(cur.rowcount, 0)
        read = None
        if self._counters is not None:
            read = rows_read(self._counters.steps(sql), len(rows), changed)
        return ResultSet(cols, rows, changed, cur.lastrowid, read, changed)

    def _run_all(self, stmts: list[tuple[str, Args]]) -> list[ResultSet]:
        assert self._conn is not None
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            results = [self._run(sql, args) for sql, args in stmts]
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return results

    async def execute(self, sql: str, args: Args) -> ResultSet:
        result: ResultSet = await self._call(self._run, sql, args)
        return result

    async def batch(self, stmts: list[tuple[str, Args]]) -> list[ResultSet]:
        results: list[ResultSet] = await self._call(self._run_all, list(stmts))
        return results

    async def reset(self) -> None:
        """Nothing to reset: a local file has no connection to lose."""

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Queued behind any statement still running, so it never closes one mid-step.
            self._pool.submit(conn.close)
        self._pool.shutdown(wait=False)


async def open_backend(url: str, auth_token: str | None) -> Backend:
    """Open the backend for a URL already stripped of `authToken` (see `split_url`)."""
    if url.startswith("file:"):
        backend = FileBackend(_file_path(url))
        await backend.start()
        return backend
    if url.startswith(("ws://", "wss://")):
        await _refuse_websocket_only(url)
    return HranaClient(http_url(url), auth_token=auth_token)


async def _refuse_websocket_only(url: str) -> None:
    """Raise HranaError when `url` answers a WebSocket handshake but drops a plain HTTP
    request: sqld's Hrana WebSocket listener. Anything else (an answer of any status, a
    server that is down) is left to the HTTP client, whose errors already say what they mean.
    """
    base = http_url(url)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        try:
            async with http.get(f"{base}/v2"):
                return
        except aiohttp.ServerDisconnectedError:
            pass
        except (aiohttp.ClientError, OSError, TimeoutError):
            return
        try:
            async with http.ws_connect(url, protocols=("hrana3", "hrana2")):
                pass
        except (aiohttp.ClientError, OSError, TimeoutError):
            return
    shown = describe_url(url)
    raise HranaError(
        f"{shown} is a Hrana WebSocket-only listener (sqld's --hrana-listen-addr), which this"
        " controller does not speak: set TURSO_DATABASE_URL to the same sqld's HTTP address"
        " instead (its --http-listen-addr, http://<host>:8080 by default)"
    )


def _file_path(url: str) -> str:
    """`file:jobs.db`, `file:/abs/jobs.db` and `file:///abs/jobs.db` name a path on disk."""
    rest = url[len("file:") :]
    if rest.startswith("//"):
        rest = urllib.parse.urlsplit(url).path
    return urllib.parse.unquote(rest.split("?", 1)[0])
