"""Every database call of the store goes through here: a deadline, retries, clear errors.

A try whose answer may have been lost (dropped connection, timeout, a 5xx behind a proxy) makes
the call `ambiguous`: the caller then checks its write against the row instead of trusting the
retry's answer alone.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from controller import metrics as m
from controller.store.backend import Args, Backend, ResultSet
from controller.store.errors import StoreError, StoreUnavailable, classify, redact

log = logging.getLogger("audiojob.store")

T = TypeVar("T")

MAX_RETRY_AFTER_SECONDS = 30.0
"""A server's Retry-After is honoured up to this; longer waits are the caller's to decide."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with jitter; each delay is between half and all of its cap."""

    attempts: int = 6
    """Tries for network faults, 429/5xx, Turso's BLOCKED and TRANSACTION_* (the first included)."""
    base_seconds: float = 0.1
    cap_seconds: float = 2.0
    busy_attempts: int = 400
    """Tries for `database is locked`: the file backend gets it at once under contention,
    and it clears within milliseconds, so it gets many short tries."""
    busy_base_seconds: float = 0.002
    busy_cap_seconds: float = 0.05

    def delay(self, tries: int, *, busy: bool) -> float:
        base, cap = (
            (self.busy_base_seconds, self.busy_cap_seconds)
            if busy
            else (self.base_seconds, self.cap_seconds)
        )
        ceiling = min(cap, base * float(2 ** (tries - 1)))
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311  # jitter, not crypto


# The statement kind of a call, from the start of its `what` sentence: a short fixed set for
# the rows-read metrics (a label per job would grow without bound). First match wins.
_KINDS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), kind)
    for pattern, kind in (
        (r"claim for |recover lost claim", "claim"),
        (r"list workers|installation heartbeat", "worker"),
        (r"heartbeat", "heartbeat"),
        (r"(complete|fail|requeue) (job |\d+ jobs)", "outcome"),
        (r"fail invalid rows", "reject"),
        (r"record (Job |\d+ Job names)", "job_name"),
        (r"record (the )?(start|end) of", "ledger"),
        (r"list rows of dead installations", "takeover_check"),
        (r"take over ", "takeover"),
        (r"count rows", "count"),
        (r"count (live|recent) rows|list (rows in flight|recent failures)", "census"),
        (r"prune ", "retention"),
        (r"insert job ", "insert"),
        (r"cancel job ", "cancel"),
        (r"finalize cancelled job ", "finalize"),
        (r"read (job|attempts)", "read"),
        (r"list (processing|cancelled) rows", "reconcile"),
        (
            r"switch to WAL|create the meta table|read schema version|read the columns of|migrate ",
            "migrate",
        ),
    )
)


def statement_kind(what: str) -> str:
    """The metrics label for a call described by `what` ("claim for 'x'" -> "claim")."""
    for pattern, kind in _KINDS:
        if pattern.match(what):
            return kind
    return "other"


class Calls:
    """Runs calls on one backend with the store's deadline and retry policy."""

    def __init__(
        self,
        backend: Backend,
        *,
        retry: RetryPolicy,
        timeout_seconds: float,
        where: str,
        token: str | None,
    ) -> None:
        self.backend = backend
        self._retry = retry
        self._timeout = timeout_seconds
        self._where = where
        self._token = token
        self.statements = 0
        """Calls sent (retries included); the benchmark reads it."""
        self.rows_read: Counter[str] = Counter()
        """Rows read as the database reported them, by statement kind (tests and bench)."""
        self.rows_written: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"Calls({self._where!r})"

    def message(self, text: str) -> str:
        return redact(f"database {self._where}: {text}", self._token)

    async def run(
        self, sql: str, args: Args, what: str, *, kind: str | None = None
    ) -> tuple[ResultSet, bool]:
        return await self.exec(
            lambda _: self.backend.execute(sql, args), what, kind=kind, statement=m.sql_verb(sql)
        )

    async def batch(
        self, stmts: list[tuple[str, Args]], what: str, *, kind: str | None = None
    ) -> list[ResultSet]:
        results, _ = await self.exec(
            lambda _: self.backend.batch(stmts), what, kind=kind, statement="batch"
        )
        return results

    async def exec(
        self,
        call: Callable[[bool], Awaitable[T]],
        what: str,
        *,
        kind: str | None = None,
        statement: str | None = None,
    ) -> tuple[T, bool]:
        """Run one database call with a deadline and retries; say if an earlier try may have
        committed without our hearing back. `call` is told that too, before each try.

        `kind` labels the rows-read metrics; without it, it is read from `what`. `statement`
        labels the latency metrics (the SQL verb; a direct call, the claim, is named by the
        first word of `what`)."""
        label = statement or m.sql_verb(what)
        tries = 0
        ambiguous = False
        started = time.monotonic()
        while True:
            tries += 1
            self.statements += 1
            try:
                result = await asyncio.wait_for(call(ambiguous), self._timeout)
                self._bill(result, kind or statement_kind(what))
                m.observe_db(label, started, ok=True)
                return result, ambiguous
            except Exception as e:
                fault = classify(e)
                m.DB_ERRORS.labels(kind=fault.kind).inc()
                if not fault.transient:
                    # A refused statement (constraint, syntax) was answered: the database is up.
                    m.observe_db(label, started, ok=fault.kind == "sql")
                    raise StoreError(self.message(f"{what}: {fault.description}")) from None
                ambiguous = ambiguous or fault.maybe_applied
                budget = self._retry.busy_attempts if fault.busy else self._retry.attempts
                if tries >= budget:
                    m.observe_db(label, started, ok=False)
                    spent = time.monotonic() - started
                    raise StoreUnavailable(
                        self.message(
                            f"{what}: gave up after {tries} tries in {spent:.1f} s:"
                            f" {fault.description}"
                        )
                    ) from None
                if not fault.busy:
                    log.warning(
                        "%s", self.message(f"{what}: retrying (try {tries}): {fault.description}")
                    )
                if fault.reconnect:
                    await self.backend.reset()
                delay = self._retry.delay(tries, busy=fault.busy)
                if fault.retry_after is not None:
                    delay = max(delay, min(fault.retry_after, MAX_RETRY_AFTER_SECONDS))
                await asyncio.sleep(delay)

    def _bill(self, result: object, kind: str) -> None:
        """Count the rows the database says the call read and wrote (a batch: every step).
        Tries whose answer was lost are not counted: their figures never arrived."""
        for rs in result if isinstance(result, list) else [result]:
            if not isinstance(rs, ResultSet):
                continue
            read, written = m.db_rows(kind)
            if rs.rows_read is not None:
                self.rows_read[kind] += rs.rows_read
                read.inc(rs.rows_read)
            if rs.rows_written is not None:
                self.rows_written[kind] += rs.rows_written
                written.inc(rs.rows_written)
