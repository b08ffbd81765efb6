"""The job store: every state transition of a row (docs/job-table.md, "A row's life") as one
conditional SQL statement.

`JobStore` is assembled from small parts, all on one client (`core.py`: opening, calls,
fencing, reading rows): the app's side, claiming, heartbeats and the reconcile reads here;
run outcomes in `outcome_writes.py`; the attempts ledger and worker registry in `ledger.py`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from controller.settings import DEFAULT_COUNT_CAP, DbSettings
from controller.store.backend import Backend, ResultSet
from controller.store.calls import RetryPolicy
from controller.store.errors import StoreError, StoreUnavailable
from controller.store.ledger import Ledger
from controller.store.models import (
    Beat,
    Claim,
    ClaimedJob,
    JobRow,
    QueueCounts,
    RejectedJob,
    WriteResult,
)
from controller.store.outcome_writes import OutcomeWrites
from controller.store.rows import chunks, job_row, now_ms, resolve_now, validate_row
from runner.rules import NetworkRules

__all__ = ["JobStore", "now_ms", "validate_row"]

log = logging.getLogger("audiojob.store")


class JobStore(OutcomeWrites, Ledger):
    """Async access to the job table; build once with `open`, close once with `close`."""

    payload_rules: NetworkRules | None = None
    """The address rules claimed payloads are checked with: the ones job pods get (set once
    after `open` from the controller's settings; None = no allowlist)."""

    def __init__(
        self, backend: Backend, db: DbSettings, retry: RetryPolicy, token: str | None
    ) -> None:
        super().__init__(backend, db, retry, token)
        self._unwritten_rejections: dict[tuple[str, int], str] = {}
        self._claim_stamps: dict[str, int] = {}

    # -- app side ---------------------------------------------------------------------------

    async def insert(
        self,
        *,
        job_id: str,
        type: str,  # the column's name, as the API promises
        payload: str | dict[str, Any],
        priority: int = 0,
        max_retries: int = 1,
        trace_id: str | None = None,
        run_after: int | None = None,
        now_ms: int | None = None,
    ) -> None:
        """Add a pending row; raises StoreError if the id exists. Payloads are checked at claim."""
        text = payload if isinstance(payload, str) else json.dumps(payload)
        rs, ambiguous = await self._call(
            self._sql.insert,
            f"insert job {job_id!r}",
            job_id=job_id,
            type=type,
            payload=text,
            priority=priority,
            max_retries=max_retries,
            trace_id=trace_id,
            run_after=run_after,
            now=resolve_now(now_ms),
        )
        if rs.rows:
            return
        if ambiguous:
            row = await self.get(job_id)
            if row is not None and row.type == type and row.payload == text:
                return
        raise StoreError(f"cannot insert job {job_id!r}: a job with that id already exists")

    async def cancel(self, job_id: str, *, now_ms: int | None = None) -> bool:
        """pending|processing -> cancelled; False if the row is finished or missing."""
        return await self._fenced(
            self._sql.cancel,
            f"cancel job {job_id!r}",
            lambda row: row.status == "cancelled",
            job_id=job_id,
            now=resolve_now(now_ms),
        )

    # -- controller: claim and run ----------------------------------------------------------

    async def claim(
        self,
        *,
        worker_id: str,
        limit: int,
        deadlines_ms: Mapping[str, int] | None = None,
        now_ms: int | None = None,
    ) -> Claim:
        """Claim up to `limit` rows in one statement; fail the invalid ones in one more.

        Each claimed row gets its attempt's run deadline: the database's clock plus
        `deadlines_ms[type]` (lifecycle.run_deadlines: how long its pod can run, whatever
        happens to this controller). Another installation takes the row over only after that
        (store.ownership). Without `deadlines_ms` (tests of other rules) the row gets none,
        and a taker falls back to its own longest deadline.
        """
        now = resolve_now(now_ms)
        # started_at identifies this claim among the worker's, which is how rows claimed by a
        # try whose answer was lost are found again; so two claims never share a millisecond.
        if self._claim_stamps.get(worker_id) == now:
            now += 1
        self._claim_stamps[worker_id] = now
        rows: dict[str, JobRow] = {}
        if limit > 0:
            by_type = [v for pair in (deadlines_ms or {}).items() for v in pair]
            roles = {
                "me": worker_id,
                "now": now,
                "limit": limit,
                "longest_ms": max(deadlines_ms.values()) if deadlines_ms else None,
                # The run deadline is the database's clock; tests that pin `now` pin it too.
                "db_clock": now_ms,
            }

            def attempt(after_loss: bool) -> Awaitable[ResultSet]:
                stmt = self._sql.claim(len(by_type) // 2, after_loss=after_loss)
                return self._calls.backend.execute(stmt.sql, stmt.args(by_type, **roles))

            rs, ambiguous = await self._exec(attempt, f"claim for {worker_id!r}")
            rows = {r.job_id: r for r in map(job_row, rs.rows)}
            if ambiguous:
                lost, _ = await self._call(
                    self._sql.claim_recover, "recover lost claim", me=worker_id, now=now
                )
                for r in map(job_row, lost.rows):
                    rows.setdefault(r.job_id, r)
        ordered = sorted(rows.values(), key=lambda r: (-r.priority, r.created_at))
        jobs: list[ClaimedJob] = []
        rejected: list[RejectedJob] = []
        for row in ordered:
            checked = validate_row(row, self.payload_rules)
            if isinstance(checked, ClaimedJob):
                jobs.append(checked)
            else:
                rejected.append(checked)
                self._unwritten_rejections[(row.job_id, row.attempt)] = checked.error
        await self._write_rejections(now)
        return Claim(jobs=jobs, rejected=rejected)

    async def _write_rejections(self, now: int) -> None:
        """Fail invalid rows permanently; if the database is away, try again next claim."""
        pending = list(self._unwritten_rejections.items())
        if not pending:
            return
        try:
            for chunk in chunks(pending):
                values = [v for (job_id, attempt), error in chunk for v in (job_id, attempt, error)]
                await self._call(self._sql.reject(len(chunk)), "fail invalid rows", values, now=now)
                for key, _ in chunk:
                    self._unwritten_rejections.pop(key, None)
        except StoreUnavailable as e:
            log.warning("invalid rows stay claimed until the next claim: %s", e)

    async def heartbeat(self, beats: Sequence[Beat], *, now_ms: int | None = None) -> set[str]:
        """Write heartbeat, stage and progress of all running rows in one statement.

        Returns the job ids whose row is no longer `processing` at that attempt: cancelled by
        the app, finished, or taken over by a later attempt.
        """
        unique = list({b.job_id: b for b in beats}.values())
        gone: set[str] = set()
        now = resolve_now(now_ms)
        stmts: list[tuple[str, list[object]]] = []
        for chunk in chunks(unique):
            values: list[object] = []
            for b in chunk:
                progress = None if b.progress is None else max(0, min(100, int(b.progress)))
                values += [b.job_id, b.attempt, b.stage, progress]
            stmt = self._sql.heartbeat(len(chunk))
            stmts.append((stmt.sql, stmt.args(values, now=now)))
        if not stmts:
            return gone
        if len(stmts) == 1:
            results = [(await self._calls.run(*stmts[0], "heartbeat"))[0]]
        else:  # more than one chunk: one request, not one round trip each
            results = await self._calls.batch(stmts, "heartbeat", kind="heartbeat")
        for chunk, rs in zip(chunks(unique), results, strict=True):
            alive = {str(v[0]) for v in rs.rows}
            gone |= {b.job_id for b in chunk} - alive
        return gone

    async def finalize_cancelled(self, job_id: str, *, now_ms: int | None = None) -> WriteResult:
        """After the pod is confirmed gone: clear stage/progress and set finished_at."""
        return _wr(
            await self._fenced(
                self._sql.finalize_cancelled,
                f"finalize cancelled job {job_id!r}",
                lambda row: row.status == "cancelled" and row.finished_at is not None,
                job_id=job_id,
                now=resolve_now(now_ms),
            )
        )

    # -- controller: adopting, cancellations, metrics -------------------------------------

    async def processing(self, *, worker_id: str) -> list[JobRow]:
        """The rows `worker_id` runs, oldest heartbeat first."""
        rs, _ = await self._call(self._sql.processing_by, "list processing rows", me=worker_id)
        return [job_row(v) for v in rs.rows]

    async def cancelled_unfinalized(self) -> list[JobRow]:
        rs, _ = await self._call(self._sql.cancelled_unfinalized, "list cancelled rows")
        return [job_row(v) for v in rs.rows]

    async def counts(self, *, cap: int = DEFAULT_COUNT_CAP) -> QueueCounts:
        """Pending and in-flight rows, each counted up to `cap` (reads at most about 2 x cap
        index entries, whatever the backlog)."""
        rs, _ = await self._call(self._sql.counts, "count rows", cap=cap)
        pending, inflight = rs.rows[0]
        return QueueCounts(pending=int(pending), inflight=int(inflight))


def _wr(applied: bool) -> WriteResult:
    return "applied" if applied else "stale"
