"""Store errors, and the one place that decides which database faults are worth retrying.

The codes are those sqld and hosted Turso send (libsql-server `hrana/stmt.rs`): SQLite's base
codes (`SQLITE_BUSY`, `SQLITE_CONSTRAINT`, …), `SQL_PARSE_ERROR`, `TRANSACTION_BUSY`,
`TRANSACTION_TIMEOUT`, `BLOCKED`; and HTTP statuses 429 (with `Retry-After`), 500, 502-504.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from dataclasses import dataclass

import aiohttp

from controller.store.hrana import HranaError


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
    """The connection is suspect: forget its streams before the next try."""
    description: str
    kind: str = "other"
    """A short, bounded name for metrics (audiojob_db_errors_total{kind})."""
    busy: bool = False
    """Lock contention that clears within milliseconds: many short tries."""
    retry_after: float | None = None
    """The server asked us to wait this many seconds before the next try."""


# Contention inside SQLite (the base codes and their extended ones); the statement did not run.
_BUSY_PREFIXES = ("SQLITE_BUSY", "SQLITE_LOCKED")
# sqld/Turso could not start or finish the transaction in time; it was rolled back.
_TX_CODES = {"TRANSACTION_BUSY", "TRANSACTION_TIMEOUT"}


def classify(error: BaseException) -> Fault:
    """Sort a failure into transient (retry with backoff) or not (surface at once)."""
    if isinstance(error, HranaError):
        return _classify_hrana(error)
    if isinstance(error, sqlite3.Error):
        return _classify_sqlite(error)
    if isinstance(error, asyncio.TimeoutError | TimeoutError):
        return Fault(
            True, True, True, "the database did not answer within the statement timeout", "timeout"
        )
    if isinstance(error, aiohttp.ClientError | ConnectionError | OSError):
        # A connector error means nothing was sent, so no write can have landed.
        never_sent = isinstance(error, aiohttp.ClientConnectorError)
        return Fault(
            True, not never_sent, True, f"connection to the database failed ({error})", "connection"
        )
    return Fault(False, False, False, f"{type(error).__name__}: {error}")


def _classify_hrana(error: HranaError) -> Fault:
    code, status, text = error.code or "", error.status, str(error)
    if status is None:
        if code.startswith(_BUSY_PREFIXES):
            return Fault(True, False, False, f"database is locked ({text})", "locked", busy=True)
        if code in _TX_CODES:
            return Fault(True, False, False, f"database is busy ({text})", "busy")
        if code == "BLOCKED":
            # Turso refuses statements once a quota is exhausted; it lifts when the quota
            # resets or the plan is raised, so this is retried like an outage.
            return Fault(
                True, False, False, f"Turso refused the statement: quota ({text})", "blocked"
            )
        return Fault(False, False, False, text, "sql")
    if status == 429:
        return Fault(
            True,
            False,
            False,
            f"rate limited ({text})",
            "rate_limited",
            retry_after=error.retry_after,
        )
    if status in (401, 403):
        return Fault(
            False, False, False, f"authentication failed ({text}); check TURSO_AUTH_TOKEN", "auth"
        )
    if status == 404:
        return Fault(
            False,
            False,
            False,
            f"no Hrana-over-HTTP endpoint ({text}); the URL must name a libSQL server"
            " (sqld or Turso) that serves /v2/pipeline",
            "not_found",
        )
    if status >= 500:
        # 503 is refused before any work; behind a proxy, 500/502/504 may hide a statement
        # that ran, so a write is checked against its row.
        return Fault(
            True,
            status != 503,
            True,
            f"database server error ({text})",
            "server",
            retry_after=error.retry_after,
        )
    return Fault(False, False, True, text)


def _classify_sqlite(error: sqlite3.Error) -> Fault:
    name = getattr(error, "sqlite_errorname", "") or ""
    text = f"{name or type(error).__name__}: {error}"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in str(error):
        return Fault(True, False, False, f"database is locked ({text})", "locked", busy=True)
    return Fault(False, False, False, text, "sql")


def redact(text: str, secret: str | None) -> str:
    """Remove the auth token from a message, in case a server or library echoed it."""
    if secret:
        text = text.replace(secret, "***")
    text = re.sub(r"(authToken=)[^&\s'\"]+", r"\1***", text)
    return re.sub(r"(Bearer\s+)[^\s'\"]+", r"\1***", text)
