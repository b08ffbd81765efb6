"""A small libSQL server for tests: a stand-in for Turso over a real SQLite file on loopback.

Protocols, exactly what libsql-client 0.3.1 speaks (checked in its `hrana/conn.py`, `http.py`):

- Hrana 2 over WebSocket (subprotocol `hrana2`; `hrana1` is also accepted, it is a subset):
  `hello` (re-sendable, as Hrana 2 allows), and requests `open_stream`, `close_stream`,
  `execute`, `batch` (with ok/error/not/and/or conditions), `sequence`, `store_sql`, `close_sql`.
  Not implemented: `describe`, and Hrana 3 (`get_autocommit`, cursors, Protobuf).
- Hrana-over-HTTP version 1: `POST /v1/execute`, `POST /v1/batch`, and `GET /` / `GET /v1`
  for health. Not implemented: `/v2/pipeline`, `/v3/*` (the client never calls them).

Each WebSocket stream gets its own SQLite connection (as in sqld, so a transaction belongs to
a stream); each HTTP request gets a fresh one. SQLite runs on the server's own event loop, in a
thread of its own, so the process under test keeps its loop and child processes can connect.

Fault injection (`server.faults`), each for the next N matching requests, optionally only those
whose SQL contains a substring: `drop` (close the TCP connection before or after executing, so
the answer is lost), `delay`, `http_status` (5xx on HTTP requests and WebSocket handshakes),
`blocked` (Turso's quota error, code BLOCKED), and `server.down_for(seconds)` (stop listening,
cut every connection, come back on the same port).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import WSMsgType, web

Action = Literal["drop_before", "drop_after", "delay", "http_status", "blocked", "handshake_status"]


@dataclass
class Fault:
    action: Action
    count: int
    match: str | None = None
    seconds: float = 0.0
    status: int = 503


@dataclass
class Faults:
    """Thread-safe queue of planned faults; tests add, the server takes."""

    planned: list[Fault] = field(default_factory=list)
    fired: list[Action] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, action: Action, *, count: int = 1, match: str | None = None, **kw: Any) -> None:
        with self._lock:
            self.planned.append(Fault(action, count, match, **kw))

    def drop(
        self, *, after_execute: bool = False, count: int = 1, match: str | None = None
    ) -> None:
        self.add("drop_after" if after_execute else "drop_before", count=count, match=match)

    def delay(self, seconds: float, *, count: int = 1, match: str | None = None) -> None:
        self.add("delay", count=count, match=match, seconds=seconds)

    def http_status(self, status: int = 503, *, count: int = 1, match: str | None = None) -> None:
        self.add("http_status", count=count, match=match, status=status)
        self.add("handshake_status", count=count, status=status)

    def blocked(self, *, count: int = 1, match: str | None = None) -> None:
        self.add("blocked", count=count, match=match)

    def clear(self) -> None:
        with self._lock:
            self.planned.clear()

    def take(self, actions: tuple[Action, ...], sql: str | None) -> Fault | None:
        with self._lock:
            for f in self.planned:
                if f.action in actions and (f.match is None or (sql and f.match in sql)):
                    f.count -= 1
                    if f.count <= 0:
                        self.planned.remove(f)
                    self.fired.append(f.action)
                    return f
        return None


class HranaError(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.proto = {"message": message, "code": code}


def _decode(v: dict[str, Any]) -> Any:
    kind = v["type"]
    if kind == "null":
        return None
    if kind == "integer":
        return int(v["value"])
    if kind == "float":
        return float(v["value"])
    if kind == "text":
        return str(v["value"])
    if kind == "blob":
        return base64.b64decode(v["base64"])
    raise HranaError(f"unknown value type {kind!r}", "HRANA_PROTO_ERROR")


def _encode(v: Any) -> dict[str, Any]:
    if v is None:
        return {"type": "null"}
    if isinstance(v, int):
        return {"type": "integer", "value": str(v)}
    if isinstance(v, float):
        return {"type": "float", "value": v}
    if isinstance(v, str):
        return {"type": "text", "value": v}
    return {"type": "blob", "base64": base64.b64encode(v).decode()}


def _sqlite_error(e: sqlite3.Error) -> HranaError:
    return HranaError(str(e), getattr(e, "sqlite_errorname", "SQLITE_ERROR"))


@dataclass
class Stats:
    requests: int = 0
    statements: int = 0


class HranaServer:
    def __init__(self, db_path: str, *, token: str | None = None, host: str = "127.0.0.1") -> None:
        self.db_path = db_path
        # Loopback, or the real node's bridge address for a controller running in a pod.
        self.host = host
        self.token = token
        self.faults = Faults()
        self.stats = Stats()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._sockets: set[web.WebSocketResponse] = set()
        self.handshakes = 0

    # -- lifecycle (called from the test's thread) ------------------------------------------

    def start(self) -> HranaServer:
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def down_for(self, seconds: float) -> None:
        """Cut every connection and refuse new ones for `seconds`, then listen again."""
        self._call(self._go_down())
        asyncio.run_coroutine_threadsafe(self._come_back(seconds), self._loop)

    def url(self, scheme: str = "ws") -> str:
        if scheme == "libsql":
            return f"libsql://{self.host}:{self.port}?tls=0"
        return f"{scheme}://{self.host}:{self.port}"

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._root)
        app.router.add_get("/v1", self._health)
        app.router.add_post("/v1/execute", self._http_execute)
        app.router.add_post("/v1/batch", self._http_batch)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await self._site.start()
        server = self._site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def _go_down(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None
        for t in list(self._transports):
            t.abort()  # type: ignore[attr-defined]
        self._transports.clear()

    async def _come_back(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self._listen()

    async def _stop(self) -> None:
        await self._go_down()
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- SQL ---------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(
            self.db_path, isolation_level=None, check_same_thread=False, timeout=5
        )

    def _execute(
        self, db: sqlite3.Connection, stmt: dict[str, Any], sqls: dict[int, str]
    ) -> dict[str, Any]:
        sql = stmt["sql"] if stmt.get("sql") is not None else sqls.get(stmt.get("sql_id", -1))
        if sql is None:
            raise HranaError("statement has neither sql nor a known sql_id", "HRANA_PROTO_ERROR")
        named = {a["name"].lstrip(":@$"): _decode(a["value"]) for a in stmt.get("named_args") or []}
        params: Any = named or [_decode(v) for v in stmt.get("args") or []]
        self.stats.statements += 1
        try:
            cur = db.execute(sql, params)
            rows = cur.fetchall()
        except sqlite3.Error as e:
            raise _sqlite_error(e) from None
        cols = [{"name": d[0], "decltype": None} for d in cur.description or ()]
        return {
            "cols": cols,
            "rows": [[_encode(v) for v in r] for r in rows] if stmt.get("want_rows", True) else [],
            "affected_row_count": max(cur.rowcount, 0),
            "last_insert_rowid": None if cur.lastrowid is None else str(cur.lastrowid),
        }

    def _batch(
        self, db: sqlite3.Connection, batch: dict[str, Any], sqls: dict[int, str]
    ) -> dict[str, Any]:
        results: list[dict[str, Any] | None] = []
        errors: list[dict[str, Any] | None] = []

        def holds(cond: dict[str, Any] | None) -> bool:
            if cond is None:
                return True
            kind = cond["type"]
            if kind == "ok":
                return results[cond["step"]] is not None
            if kind == "error":
                return errors[cond["step"]] is not None
            if kind == "not":
                return not holds(cond["cond"])
            if kind == "and":
                return all(holds(c) for c in cond["conds"])
            if kind == "or":
                return any(holds(c) for c in cond["conds"])
            raise HranaError(f"unknown condition {kind!r}", "HRANA_PROTO_ERROR")

        for step in batch["steps"]:
            if not holds(step.get("condition")):
                results.append(None)
                errors.append(None)
                continue
            try:
                results.append(self._execute(db, step["stmt"], sqls))
                errors.append(None)
            except HranaError as e:
                results.append(None)
                errors.append(e.proto)
        return {"step_results": results, "step_errors": errors}

    @staticmethod
    def _sql_of(request: dict[str, Any]) -> str:
        if "stmt" in request:
            return str(request["stmt"].get("sql") or "")
        if "batch" in request:
            return "\n".join(str(s["stmt"].get("sql") or "") for s in request["batch"]["steps"])
        return str(request.get("sql") or "")

    # -- HTTP v1 -----------------------------------------------------------------------------

    async def _root(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._ws(request)
        return web.Response(text="hrana test server")

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def _authorized(self, request: web.Request) -> bool:
        return self.token is None or request.headers.get("authorization") == f"Bearer {self.token}"

    async def _http(  # one exit per injected fault
        self, request: web.Request, kind: str
    ) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            self._transports.add(transport)
        if not self._authorized(request):
            return web.json_response(
                {
                    "message": "Authentication failed: the token is not valid",
                    "code": "UNAUTHORIZED",
                },
                status=401,
            )
        body = await request.json()
        self.stats.requests += 1
        sql = self._sql_of(body)
        fault = self.faults.take(
            ("drop_before", "drop_after", "delay", "http_status", "blocked"), sql
        )
        if fault is not None:
            if fault.action == "delay":
                await asyncio.sleep(fault.seconds)
            elif fault.action == "drop_before":
                return self._drop(request)
            elif fault.action == "http_status":
                return web.Response(status=fault.status, text="upstream unavailable")
            elif fault.action == "blocked":
                return web.json_response(
                    {"message": "Operation was blocked: quota exceeded", "code": "BLOCKED"},
                    status=400,
                )
        with contextlib.closing(self._connect()) as db:
            try:
                if kind == "execute":
                    out = {"result": self._execute(db, body["stmt"], {})}
                else:
                    out = {"result": self._batch(db, body["batch"], {})}
            except HranaError as e:
                return web.json_response(e.proto, status=400)
        if fault is not None and fault.action == "drop_after":
            return self._drop(request)
        return web.json_response(out)

    def _drop(self, request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()  # type: ignore[attr-defined]
        raise ConnectionResetError("fault injection: connection dropped")

    async def _http_execute(self, request: web.Request) -> web.StreamResponse:
        return await self._http(request, "execute")

    async def _http_batch(self, request: web.Request) -> web.StreamResponse:
        return await self._http(request, "batch")

    # -- Hrana over WebSocket ---------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        self.handshakes += 1
        fault = self.faults.take(("handshake_status",), None)
        if fault is not None:
            return web.Response(status=fault.status, text="upstream unavailable")
        ws = web.WebSocketResponse(protocols=("hrana2", "hrana1"), autoping=True)
        await ws.prepare(request)
        transport = request.transport
        if transport is not None:
            self._transports.add(transport)
        self._sockets.add(ws)
        streams: dict[int, sqlite3.Connection] = {}
        sqls: dict[int, str] = {}
        authed = False
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    await ws.close(code=3003, message=b"only text messages")
                    break
                m = json.loads(msg.data)
                if m["type"] == "hello":
                    if self.token is not None and m.get("jwt") != self.token:
                        err = {"message": "Authentication failed: the JWT is invalid"}
                        await ws.send_json({"type": "hello_error", "error": err})
                        await ws.close()
                        break
                    authed = True
                    await ws.send_json({"type": "hello_ok"})
                elif m["type"] == "request" and authed:
                    if not await self._ws_request(ws, request, m, streams, sqls):
                        break
                else:
                    await ws.close(code=3001, message=b"unexpected message")
                    break
        finally:
            self._sockets.discard(ws)
            for db in streams.values():
                db.close()
        return ws

    async def _ws_request(
        self,
        ws: web.WebSocketResponse,
        http: web.Request,
        m: dict[str, Any],
        streams: dict[int, sqlite3.Connection],
        sqls: dict[int, str],
    ) -> bool:
        """Answer one request; False once the connection has been dropped on purpose."""
        rid, req = m["request_id"], m["request"]
        kind = req["type"]
        fault = None
        if kind in ("execute", "batch", "sequence"):
            self.stats.requests += 1
            fault = self.faults.take(
                ("drop_before", "drop_after", "delay", "blocked"), self._sql_of(req)
            )
        if fault is not None:
            if fault.action == "delay":
                await asyncio.sleep(fault.seconds)
            elif fault.action == "drop_before":
                self._abort(http)
                return False
            elif fault.action == "blocked":
                err = {"message": "Operation was blocked: quota exceeded", "code": "BLOCKED"}
                await ws.send_json({"type": "response_error", "request_id": rid, "error": err})
                return True
        try:
            response = self._ws_handle(req, streams, sqls)
        except HranaError as e:
            await ws.send_json({"type": "response_error", "request_id": rid, "error": e.proto})
            return True
        if fault is not None and fault.action == "drop_after":
            self._abort(http)
            return False
        await ws.send_json({"type": "response_ok", "request_id": rid, "response": response})
        return True

    def _abort(self, http: web.Request) -> None:
        if http.transport is not None:
            http.transport.abort()  # type: ignore[attr-defined]

    def _ws_handle(  # one return per Hrana request type
        self,
        req: dict[str, Any],
        streams: dict[int, sqlite3.Connection],
        sqls: dict[int, str],
    ) -> dict[str, Any]:
        kind = req["type"]
        if kind == "open_stream":
            streams[req["stream_id"]] = self._connect()
            return {"type": "open_stream"}
        if kind == "close_stream":
            db = streams.pop(req["stream_id"], None)
            if db is not None:
                db.close()
            return {"type": "close_stream"}
        if kind == "store_sql":
            sqls[req["sql_id"]] = req["sql"]
            return {"type": "store_sql"}
        if kind == "close_sql":
            sqls.pop(req["sql_id"], None)
            return {"type": "close_sql"}
        db = streams.get(req.get("stream_id", -1))
        if db is None:
            raise HranaError("stream is not open", "STREAM_CLOSED")
        if kind == "execute":
            return {"type": "execute", "result": self._execute(db, req["stmt"], sqls)}
        if kind == "batch":
            return {"type": "batch", "result": self._batch(db, req["batch"], sqls)}
        if kind == "sequence":
            sql = req["sql"] if req.get("sql") is not None else sqls.get(req.get("sql_id", -1), "")
            try:
                db.executescript(sql)
            except sqlite3.Error as e:
                raise _sqlite_error(e) from None
            return {"type": "sequence"}
        raise HranaError(f"request type {kind!r} is not implemented", "HRANA_PROTO_ERROR")


@contextlib.contextmanager
def running_server(
    db_path: str, *, token: str | None = None, host: str = "127.0.0.1"
) -> Iterator[HranaServer]:
    server = HranaServer(db_path, token=token, host=host).start()
    try:
        yield server
    finally:
        server.stop()
