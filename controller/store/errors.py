"""Store errors, and the one place that decides which database faults are worth retrying."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import aiohttp
from libsql_client import LibsqlError


class StoreError(Exception):
    """A database call failed in a way retrying will not fix; the message says what to do.

    Messages never contain the auth token (see `redact`).
    """


class StoreUnavailable(StoreError):
    """Transient faults persisted past the retry budget; the caller keeps its write for later."""


@dataclass(frozen=True, slots=True)
class Fault:
    """How the store treats one failed call."""

    transient: bool
    maybe_applied: bool
    """The statement may have committed although no answer arrived (a write must be checked)."""
    reconnect: bool
    """The connection is suspect: build a fresh client before the next try."""
    description: str


# SQLite reports contention as SQLITE_BUSY*/SQLITE_LOCKED*; the file backend opens every
# connection with timeout=0, so these arrive at once instead of after a busy wait.
_BUSY = re.compile(r"^SQLITE_(BUSY|LOCKED)")
_HTTP_STATUS = re.compile(r"HTTP status (\d{3})")
# Codes that mean "this stream or socket broke", not "this SQL is wrong".
_BROKEN_TRANSPORT = {"HRANA_WEBSOCKET_ERROR", "STREAM_CLOSED"}


def classify(error: BaseException) -> Fault:
    """Sort a failure into transient (retry with backoff) or not (surface at once)."""
    if isinstance(error, LibsqlError):
        return _classify_libsql(error)
    if isinstance(error, asyncio.TimeoutError | TimeoutError):
        return Fault(True, True, True, "the database did not answer within the statement timeout")
    if isinstance(error, aiohttp.ClientResponseError):
        # Covers a refused WebSocket handshake: 5xx is an outage, 401/403 a wrong token.
        if error.status >= 500:
            return Fault(True, False, True, f"database server error: HTTP {error.status}")
        return Fault(False, False, True, f"database answered HTTP {error.status} {error.message}")
    if isinstance(error, aiohttp.ClientError | ConnectionError | OSError):
        # A connector error means nothing was sent, so no write can have landed.
        never_sent = isinstance(error, aiohttp.ClientConnectorError)
        return Fault(True, not never_sent, True, f"connection to the database failed ({error})")
    return Fault(False, False, False, f"{type(error).__name__}: {error}")


def _classify_libsql(error: LibsqlError) -> Fault:
    code = error.code or "UNKNOWN"
    text = f"{code}: {error.explanation}"
    if _BUSY.match(code) or "database is locked" in error.explanation:
        return Fault(True, False, False, f"database is locked ({text})")
    if code == "BLOCKED":
        # Turso refuses statements once a quota is exhausted; it lifts when the quota resets
        # or the plan is raised, so this is retried like an outage.
        return Fault(True, False, False, f"Turso refused the statement: quota ({text})")
    if code in _BROKEN_TRANSPORT:
        return Fault(True, True, True, f"connection to the database dropped ({text})")
    if code == "SERVER_ERROR":
        status = _HTTP_STATUS.search(error.explanation)
        if status and int(status.group(1)) >= 500:
            return Fault(True, True, True, f"database server error ({text})")
    return Fault(False, False, False, text)


def redact(text: str, secret: str | None) -> str:
    """Remove the auth token from a message, in case a server or library echoed it."""
    if secret:
        text = text.replace(secret, "***")
    return re.sub(r"(authToken=)[^&\s'\"]+", r"\1***", text)
