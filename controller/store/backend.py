"""One libsql-client per store, with the event loop kept free and a way to start over.

libsql-client 0.3.1 has three transports behind `create_client(url)`:

- `file:` runs stdlib sqlite3 synchronously inside `async def execute`, opening a new connection
  per call with `timeout=0`. Called on the controller's loop it would block kopf, so here it runs
  on the library's own sync facade (a private loop in one thread) and is awaited from a
  single-thread executor. All statements of this process therefore reach SQLite one at a time.
- `ws://`, `wss://`, `libsql://` speak Hrana 2 over one WebSocket. A dropped socket poisons the
  connection; the library reconnects lazily on the next call. A call that hangs is abandoned by
  replacing the client (`reset`).
- `http://`, `https://` speak Hrana-over-HTTP v1 (`POST v1/execute`, `v1/batch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import libsql_client
from libsql_client import ResultSet

Args = list[Any]


class Backend(Protocol):
    async def execute(self, sql: str, args: Args) -> ResultSet: ...
    async def batch(self, stmts: list[tuple[str, Args]]) -> list[ResultSet]: ...
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


class FileBackend:
    def __init__(self, url: str) -> None:
        self._url = url
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audiojob-store")
        self._client: Any = None

    async def start(self) -> None:
        building = self._pool.submit(libsql_client.create_client_sync, self._url)
        try:
            self._client = await asyncio.wrap_future(building)
        except asyncio.CancelledError:
            # The client gets built anyway, with a thread that would keep the process alive;
            # close it as soon as it exists (same one-worker pool, so right after).
            self._pool.submit(_close_when_built, building)
            self._pool.shutdown(wait=False)
            raise

    async def execute(self, sql: str, args: Args) -> ResultSet:
        loop = asyncio.get_running_loop()
        result: ResultSet = await loop.run_in_executor(self._pool, self._client.execute, sql, args)
        return result

    async def batch(self, stmts: list[tuple[str, Args]]) -> list[ResultSet]:
        loop = asyncio.get_running_loop()
        results: list[ResultSet] = await loop.run_in_executor(
            self._pool, self._client.batch, list(stmts)
        )
        return results

    async def reset(self) -> None:
        """Nothing to reset: every call already opens its own SQLite connection."""

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        if self._client is not None:
            await loop.run_in_executor(self._pool, self._client.close)
        self._pool.shutdown(wait=False)


def _close_when_built(building: Future[Any]) -> None:
    with contextlib.suppress(BaseException):
        building.result().close()


class NetBackend:
    def __init__(self, url: str, auth_token: str | None) -> None:
        self._url = url
        self._token = auth_token
        self._client: libsql_client.Client = libsql_client.create_client(url, auth_token=auth_token)
        self._retired: set[asyncio.Task[None]] = set()

    async def execute(self, sql: str, args: Args) -> ResultSet:
        return await self._client.execute(sql, args)

    async def batch(self, stmts: list[tuple[str, Args]]) -> list[ResultSet]:
        results: list[ResultSet] = await self._client.batch(list(stmts))
        return results

    async def reset(self) -> None:
        old, self._client = (
            self._client,
            libsql_client.create_client(self._url, auth_token=self._token),
        )
        # Closing waits for the old socket's close handshake; a dead peer must not hold up
        # the retry, so the old client is closed in the background.
        task = asyncio.create_task(_close_quietly(old))
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def close(self) -> None:
        await _close_quietly(self._client)
        if self._retired:
            await asyncio.wait(self._retired, timeout=5)


async def _close_quietly(client: libsql_client.Client) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close(), timeout=5)


async def open_backend(url: str, auth_token: str | None) -> Backend:
    clean, url_token = split_url(url)
    token = auth_token or url_token
    if clean.startswith("file:"):
        backend = FileBackend(clean)
        await backend.start()
        return backend
    return NetBackend(clean, token)
