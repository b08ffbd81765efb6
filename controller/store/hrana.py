"""A small asyncio client of Hrana over HTTP (`POST /v2/pipeline`), the protocol of sqld and Turso.

Why our own: the libSQL Python clients either speak transports hosted Turso refuses
(`libsql-client`: Hrana 2 over WebSocket, HTTP `/v1`) or hold the GIL while a remote call
waits (`libsql`), which would freeze the controller's event loop on a stalled server. This
client never blocks the loop, and every call can be timed out or cancelled.

Streams: each call takes an idle stream's baton (or opens a new stream), sends one `execute`
or `batch`, and gives the new baton back to the idle set only when a complete answer arrived.
A call that failed, timed out or was cancelled drops its baton: after a lost answer we cannot
know whether the server advanced the stream, so it is never reused blindly (the server expires
it). A baton idle longer than the server keeps streams (sqld: 10 s) is not used either; and if
the server still says the stream is gone, the call is sent once more on a fresh stream — the
server checks the baton before it runs anything, so nothing ran twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

STREAM_IDLE_SECONDS = 5.0
"""Longest idle time before a baton is abandoned; sqld expires idle streams after 10 s."""
MAX_IDLE_STREAMS = 8
CLOSE_SECONDS = 2.0
"""How long `close` waits for the server to close idle streams."""

Args = Sequence[Any]


@dataclass(frozen=True, slots=True)
class ResultSet:
    """Rows of one statement; values are None, int, float, str or bytes."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    rows_affected: int = 0
    last_insert_rowid: int | None = None
    rows_read: int | None = None
    """Rows the statement read as the server counts them (sqld: what Turso bills); None when
    the backend cannot tell."""
    rows_written: int | None = None


class HranaError(Exception):
    """The server answered with an error: SQL (`code` like SQLITE_CONSTRAINT) or HTTP status."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status else None
        head = ", ".join(p for p in (where, self.code) if p)
        return f"{head}: {self.message}" if head else self.message


class StreamGone(HranaError):
    """The server no longer knows the stream we named (expired, or its baton was superseded)."""


def encode_value(value: Any) -> dict[str, Any]:
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool | int):
        return {"type": "integer", "value": str(int(value))}
    if isinstance(value, float):
        return {"type": "float", "value": value}
    if isinstance(value, str):
        return {"type": "text", "value": value}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"type": "blob", "base64": base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"cannot send a {type(value).__name__} to the database")


def decode_value(value: dict[str, Any]) -> Any:
    kind = value.get("type")
    if kind == "null":
        return None
    if kind == "integer":
        return int(value["value"])
    if kind == "float":
        return float(value["value"])
    if kind == "text":
        return str(value["value"])
    if kind == "blob":
        text = str(value.get("base64", ""))
        # sqld sends blobs as unpadded base64.
        return base64.b64decode(text + "=" * (-len(text) % 4))
    raise HranaError(f"the server sent a value of unknown type {kind!r}", code="PROTOCOL")


def stmt(sql: str, args: Args) -> dict[str, Any]:
    return {"sql": sql, "args": [encode_value(a) for a in args], "want_rows": True}


def result_set(raw: dict[str, Any]) -> ResultSet:
    rowid = raw.get("last_insert_rowid")
    return ResultSet(
        columns=tuple(str(c.get("name") or "") for c in raw.get("cols", [])),
        rows=[tuple(decode_value(v) for v in row) for row in raw.get("rows", [])],
        rows_affected=int(raw.get("affected_row_count") or 0),
        last_insert_rowid=int(rowid) if rowid is not None else None,
        rows_read=_count(raw.get("rows_read")),
        rows_written=_count(raw.get("rows_written")),
    )


def _count(value: Any) -> int | None:
    """A StmtResult's `rows_read`/`rows_written`: sqld sends integers; older servers omit them."""
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None


def transaction(stmts: Sequence[tuple[str, Args]]) -> dict[str, Any]:
    """A Hrana batch running `stmts` in one transaction: each step only if all before it
    succeeded, COMMIT after the last, ROLLBACK if the COMMIT did not happen."""
    steps: list[dict[str, Any]] = [{"stmt": stmt("BEGIN IMMEDIATE", [])}]
    for sql, args in stmts:
        steps.append({"stmt": stmt(sql, args), "condition": _ok(len(steps) - 1)})
    commit = len(steps)
    steps.append({"stmt": stmt("COMMIT", []), "condition": _ok(commit - 1)})
    steps.append({"stmt": stmt("ROLLBACK", []), "condition": {"type": "not", "cond": _ok(commit)}})
    return {"steps": steps}


def _ok(step: int) -> dict[str, Any]:
    return {"type": "ok", "step": step}


def _error(raw: dict[str, Any] | None, fallback: str) -> HranaError:
    if not isinstance(raw, dict):
        return HranaError(fallback)
    return HranaError(str(raw.get("message") or fallback), code=raw.get("code"))


@dataclass(slots=True)
class _Stream:
    baton: str
    url: str
    idle_since: float = field(default_factory=time.monotonic)


class HranaClient:
    """Hrana-over-HTTP v2 client for one database; build once, `close` once."""

    def __init__(self, url: str, *, auth_token: str | None) -> None:
        self._url = url.rstrip("/")
        self._headers = {"Content-Type": "application/json"}
        if auth_token:
            self._headers["Authorization"] = f"Bearer {auth_token}"
        self._session: aiohttp.ClientSession | None = None
        self._idle: list[_Stream] = []

    def __repr__(self) -> str:
        return f"HranaClient({self._url!r})"

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No client-wide timeout: the caller bounds each call (and may cancel it).
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None),
                connector=aiohttp.TCPConnector(limit=32, enable_cleanup_closed=True),
            )
        return self._session

    async def execute(self, sql: str, args: Args) -> ResultSet:
        raw = await self._one({"type": "execute", "stmt": stmt(sql, args)})
        return result_set(raw["result"])

    async def batch(self, stmts: Sequence[tuple[str, Args]]) -> list[ResultSet]:
        """Run `stmts` in one transaction; the first failing statement's error is raised."""
        raw = await self._one({"type": "batch", "batch": transaction(stmts)})
        result = raw["result"]
        for error in result.get("step_errors", []):
            if error is not None:
                raise _error(error, "a statement of the batch failed")
        steps = result.get("step_results", [])[1 : 1 + len(stmts)]
        return [result_set(s) for s in steps]

    async def reset(self) -> None:
        """Forget every idle stream: after a fault, the server may have lost them all.

        The HTTP session stays: other calls may be in flight on it, and aiohttp already
        discards a connection that broke.
        """
        self._idle.clear()

    async def close(self) -> None:
        """Close idle streams on the server (best effort, bounded) and the HTTP session."""
        idle, self._idle = self._idle, []
        closing = [
            self._post(s.url, {"baton": s.baton, "requests": [{"type": "close"}]}) for s in idle
        ]
        if closing:
            # A stalled server must not hold up shutdown; it expires the streams anyway.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    asyncio.gather(*closing, return_exceptions=True), CLOSE_SECONDS
                )
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _one(self, request: dict[str, Any]) -> dict[str, Any]:
        stream = self._take()
        try:
            body = await self._pipeline(stream, request)
        except StreamGone:
            if stream is None:
                raise
            body = await self._pipeline(None, request)
        result = body["results"][0]
        if result.get("type") != "ok":
            raise _error(result.get("error"), "the statement failed")
        response: dict[str, Any] = result["response"]
        return response

    async def _pipeline(self, stream: _Stream | None, request: dict[str, Any]) -> dict[str, Any]:
        url = stream.url if stream else self._url
        body = await self._post(
            url, {"baton": stream.baton if stream else None, "requests": [request]}
        )
        baton = body.get("baton")
        if isinstance(baton, str) and baton:
            self._give_back(_Stream(baton, _sticky_url(self._url, body.get("base_url")) or url))
        return body

    async def _post(self, url: str, payload: dict[str, Any]) -> dict[str, Any]:
        named_stream = payload["baton"] is not None
        async with self._http().post(
            f"{url}/v2/pipeline", data=json.dumps(payload), headers=self._headers
        ) as response:
            text = await response.text()
            if response.status != 200:
                raise _http_error(response.status, text, response.headers, named_stream)
        try:
            body = json.loads(text)
            if not isinstance(body, dict) or not isinstance(body.get("results"), list):
                raise ValueError("no results")
        except ValueError:
            raise HranaError("the server's answer is not a Hrana pipeline response") from None
        return body

    def _take(self) -> _Stream | None:
        now = time.monotonic()
        while self._idle:
            stream = self._idle.pop()
            if now - stream.idle_since < STREAM_IDLE_SECONDS:
                return stream
        return None

    def _give_back(self, stream: _Stream) -> None:
        if len(self._idle) < MAX_IDLE_STREAMS:
            self._idle.append(stream)


def _sticky_url(configured: str, base_url: Any) -> str | None:
    """The stream's own URL if the server named one, never a downgrade from TLS."""
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        return None
    if configured.startswith("https://") and not base_url.startswith("https://"):
        return None
    return base_url.rstrip("/")


# sqld answers an unknown, superseded or expired baton with these (HTTP 400 or 500).
_STREAM_GONE = {"STREAM_EXPIRED", "BATON_INVALID", "BATON_REUSED", "BATON_STREAM_CLOSED"}


def _http_error(status: int, text: str, headers: Any, named_stream: bool) -> HranaError:
    code: str | None = None
    message = text.strip()[:300] or f"HTTP {status}"
    try:
        body = json.loads(text)
        if isinstance(body, dict):
            code = body.get("code")
            message = str(body.get("message") or body.get("error") or message)
    except ValueError:
        pass
    retry_after = _retry_after(headers.get("Retry-After"))
    gone = named_stream and (
        code in _STREAM_GONE
        or (status == 400 and "baton" in message.lower())
        or (status in (400, 404) and "stream" in message.lower())
    )
    kind = StreamGone if gone else HranaError
    return kind(message, code=code, status=status, retry_after=retry_after)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds form; an HTTP date counts as one second)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0
