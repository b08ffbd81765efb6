"""The HTTP side: sqld's routes, statuses and bodies, auth, faults, and the server's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from .faults import HTTP_ACTIONS, Faults
from .protocol import (
    HRANA2,
    HRANA3,
    REQUEST_TYPES,
    Context,
    CountedConnection,
    HranaError,
    ProtocolError,
    Stats,
    execute_batch,
    handle,
    sql_of,
)
from .sqlite_meta import MetaReader
from .streams import StreamExpired, Streams

INDEX_TEXT = "Hello, this is HTTP API v2 (Hrana over HTTP)"
VERSION_TEXT = "audiojob-operator hrana test double"


class HranaServer:
    def __init__(
        self,
        db_path: str,
        *,
        token: str | None = None,
        base_url: str | None = None,
        stream_expiry_seconds: float = 10.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.db_path = db_path
        # Loopback, or the real node's bridge address for a controller running in a pod.
        self.host = host
        self.token = token
        self.base_url = base_url
        self.faults = Faults()
        self.round_trip_seconds = 0.0
        """Added to every pipeline and cursor request before it runs: the network between a
        cluster and hosted Turso (bench_controller.py's latency runs set 0, 20 and 50 ms)."""
        self.stats = Stats()
        self.port = 0
        self.streams = Streams(self._connect, expiry=stream_expiry_seconds)
        self._meta: MetaReader | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        # SQLite waits (a writer behind another stream's transaction) happen on these threads,
        # so one blocked stream never stalls the others or the server's event loop.
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="hrana-sql")
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle (called from the test's thread) ------------------------------------------

    def start(self) -> HranaServer:
        with contextlib.closing(self._connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")
        self._meta = MetaReader(self.db_path)
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=True)
        self.streams.close_all()
        if self._meta is not None:
            self._meta.close()

    def down_for(self, seconds: float) -> None:
        """Cut every connection and refuse new ones for `seconds`, then listen again."""
        self._call(self._go_down())
        asyncio.run_coroutine_threadsafe(self._come_back(seconds), self._loop)

    def url(self, scheme: str = "http") -> str:
        if scheme == "libsql":
            return f"libsql://{self.host}:{self.port}?tls=0"
        return f"{scheme}://{self.host}:{self.port}"

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/health", self._health)
        app.router.add_get("/version", self._version)
        app.router.add_get("/v2", self._index)
        app.router.add_get("/v3", self._index)
        app.router.add_post("/v2/pipeline", self._pipeline_v2)
        app.router.add_post("/v3/pipeline", self._pipeline_v3)
        app.router.add_post("/v3/cursor", self._cursor)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await self._listen()
        self._sweeper = asyncio.create_task(self._sweep())

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
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self._go_down()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.streams.expire()

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(
            self.db_path,
            isolation_level=None,
            check_same_thread=False,
            timeout=5,
            factory=CountedConnection,
        )

    # -- routes ------------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response()

    async def _version(self, request: web.Request) -> web.Response:
        return web.Response(text=VERSION_TEXT)

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text=INDEX_TEXT)

    async def _pipeline_v2(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, HRANA2, cursor=False)

    async def _pipeline_v3(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, HRANA3, cursor=False)

    async def _cursor(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, HRANA3, cursor=True)

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.token is None:
            return None
        header = request.headers.get("Authorization")
        if header is None:
            why = "The `Authorization` HTTP header is required but was not specified"
        elif header != f"Bearer {self.token}":
            why = "The JWT is invalid"
        else:
            return None
        return web.json_response({"error": f"Unauthorized: `{why}`"}, status=401)

    async def _serve(  # one exit per outcome, in the order sqld meets them
        self, request: web.Request, version: int, *, cursor: bool
    ) -> web.StreamResponse:
        if request.transport is not None:
            self._transports.add(request.transport)
        denied = self._unauthorized(request)
        if denied is not None:
            return denied
        try:
            body = _parse(await request.read(), cursor=cursor)
        except ProtocolError as e:
            return web.Response(status=400, text=str(e))
        self.stats.requests += 1
        if self.round_trip_seconds > 0:
            await asyncio.sleep(self.round_trip_seconds)
        fault = self.faults.take(HTTP_ACTIONS, _body_sql(body))
        if fault is not None:
            if fault.action == "delay":
                await asyncio.sleep(fault.seconds)
            elif fault.action == "drop_before":
                return self._drop(request)
            elif fault.action == "http_status":
                return web.Response(status=fault.status, text="upstream unavailable")
            elif fault.action == "too_many_requests":
                return web.json_response(
                    {"error": "Too many concurrent requests"},
                    status=429,
                    headers={"Retry-After": f"{fault.seconds:g}"},
                )
        run = self._run_cursor if cursor else self._run_pipeline
        try:
            out = await self._loop.run_in_executor(self._pool, run, body, version)
        except ProtocolError as e:
            return web.Response(status=400, text=str(e))
        except StreamExpired as e:
            return web.json_response({"message": str(e), "code": "STREAM_EXPIRED"}, status=500)
        if fault is not None and fault.action == "drop_after":
            return self._drop(request)
        if cursor:
            text = "".join(json.dumps(line) + "\n" for line in out)
            return web.Response(text=text, content_type="text/plain")
        return web.json_response(out)

    def _drop(self, request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError("fault injection: connection dropped")

    # -- on the SQL threads --------------------------------------------------------------------

    def _context(self, version: int) -> Context:
        assert self._meta is not None
        return Context(meta=self._meta, faults=self.faults, stats=self.stats, version=version)

    def _run_pipeline(self, body: dict[str, Any], version: int) -> dict[str, Any]:
        stream = self.streams.acquire(body.get("baton"))
        ctx = self._context(version)
        try:
            results = [handle(stream, req, ctx) for req in body["requests"]]
        except BaseException:
            self.streams.discard(stream)
            raise
        return {
            "baton": self.streams.release(stream),
            "base_url": self.base_url,
            "results": results,
        }

    def _run_cursor(self, body: dict[str, Any], version: int) -> list[dict[str, Any]]:
        stream = self.streams.acquire(body.get("baton"))
        entries: list[dict[str, Any]] = []
        try:
            if stream.db is None:
                raise ProtocolError("Stream for this baton was closed")
            try:
                result = execute_batch(stream, stream.db, body["batch"], self._context(version))
            except HranaError as e:
                entries.append({"type": "error", "error": e.proto})
            else:
                entries.extend(_cursor_entries(result))
        except BaseException:
            self.streams.discard(stream)
            raise
        head = {"baton": self.streams.release(stream), "base_url": self.base_url}
        return [head, *entries]


def _parse(raw: bytes, *, cursor: bool) -> dict[str, Any]:
    """Reject what sqld's JSON deserializer rejects, before any stream is touched."""
    try:
        body = json.loads(raw)
        baton = body.get("baton")
        if baton is not None and not isinstance(baton, str):
            raise ValueError("baton must be a string or null")
        if cursor:
            if not isinstance(body["batch"].get("steps"), list):
                raise ValueError("batch.steps must be an array")
        else:
            for req in body["requests"]:
                if req.get("type") not in REQUEST_TYPES:
                    raise ValueError(f"unknown variant `{req.get('type')}`")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ProtocolError(f"Cannot deserialize client message from JSON: {e}") from None
    return dict(body)


def _body_sql(body: dict[str, Any]) -> str:
    if "batch" in body:
        return sql_of({"batch": body["batch"]}, {})
    texts = [sql_of(r, {}) for r in body["requests"]]
    texts += [r["sql"] for r in body["requests"] if r.get("type") == "store_sql"]
    return "\n".join(t for t in texts if t)


def _cursor_entries(result: dict[str, Any]) -> Iterator[dict[str, Any]]:
    steps = zip(result["step_results"], result["step_errors"], strict=True)
    for i, (ok, error) in enumerate(steps):
        if error is not None:
            yield {"type": "step_error", "step": i, "error": error}
        elif ok is not None:
            yield {"type": "step_begin", "step": i, "cols": ok["cols"]}
            for row in ok["rows"]:
                yield {"type": "row", "row": row}
            yield {
                "type": "step_end",
                "affected_row_count": ok["affected_row_count"],
                "last_insert_rowid": ok["last_insert_rowid"],
            }


@contextlib.contextmanager
def running_server(
    db_path: str, *, token: str | None = None, host: str = "127.0.0.1"
) -> Iterator[HranaServer]:
    server = HranaServer(db_path, token=token, host=host).start()
    try:
        yield server
    finally:
        server.stop()
