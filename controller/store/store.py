"""The job store: every state transition of DESIGN.md as one conditional SQL statement.

Fencing: every write about a run names `job_id`, `attempt` and the expected `status`, and says
whether it changed the row (`applied`) or found it moved on (`stale`). A statement whose answer
was lost (dropped socket, timeout) is retried; if the retry then finds nothing to change, the
row is read back to tell "our earlier try landed" from "someone else moved it".
"""

# SQL is assembled only from constants and checked identifiers; values are bound

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from controller.settings import DbSettings
from controller.store.backend import Args, Backend, ResultSet, describe_url, open_backend, split_url
from controller.store.calls import Calls, RetryPolicy
from controller.store.errors import StoreError, StoreUnavailable, classify, redact
from controller.store.models import (
    FAIL_KINDS,
    JOB_COLUMNS,
    AttemptRow,
    Beat,
    Claim,
    ClaimedJob,
    JobRow,
    QueueCounts,
    RejectedJob,
    RetryOutcome,
    WorkerRow,
    WriteResult,
)
from controller.store.schema import migrate
from controller.store.sql import Sql
from runner.payloads import PayloadError, parse_payload
from runner.rules import NetworkRules

log = logging.getLogger("audiojob.store")

T = TypeVar("T")

# SQLite's default limit is 32766 bound parameters; libSQL keeps it. Batches larger than this
# many rows are split into several statements (the controller's concurrency is far below it).
MAX_BATCH = 500


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _row(values: Sequence[Any]) -> JobRow:
    return JobRow.model_validate(dict(zip(JOB_COLUMNS, values, strict=True)))


def _chunks(items: Sequence[T], size: int = MAX_BATCH) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


MAX_ERROR_CHARS = 1_000


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """Keep an error a single readable line: the sentence may quote keys from the payload."""
    flat = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def validate_row(row: JobRow, rules: NetworkRules | None = None) -> ClaimedJob | RejectedJob:
    """Check a claimed row's type and payload with the runner's own rules; never raises,
    whatever the row holds."""
    try:
        return ClaimedJob(row=row, payload=parse_payload(row.type, row.payload, rules=rules))
    except PayloadError as e:
        return RejectedJob(row=row, error=one_line(str(e)))
    except Exception as e:  # a payload model bug must not stop the claim loop
        return RejectedJob(row=row, error=f"payload could not be checked: {type(e).__name__}")


class JobStore:
    """Async access to the job table; build once with `open`, close once with `close`."""

    payload_rules: NetworkRules | None = None
    """The address rules claimed payloads are checked with: the ones job pods get (set once
    after `open` from the controller's settings; None = no allowlist)."""

    def __init__(
        self, backend: Backend, db: DbSettings, retry: RetryPolicy, token: str | None
    ) -> None:
        self._db = db
        self._where = describe_url(db.url)
        self._calls = Calls(
            backend,
            retry=retry,
            timeout_seconds=db.statement_timeout_seconds,
            where=self._where,
            token=token,
        )
        self._sql = Sql(db.table)
        self._unwritten_rejections: dict[tuple[str, int], str] = {}
        self._claim_stamps: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"JobStore({self._where!r}, table={self._db.table!r})"

    @property
    def statements(self) -> int:
        """Database calls sent (retries included); the benchmark reads it."""
        return self._calls.statements

    @classmethod
    async def open(cls, db: DbSettings, *, retry: RetryPolicy | None = None) -> JobStore:
        """Build the client once, switch a file database to WAL, and migrate the schema."""
        url, url_token = split_url(db.url)
        token = db.auth_token.get_secret_value() if db.auth_token else url_token
        try:
            backend = await open_backend(url, token)
        except Exception as e:
            fault = classify(e)
            raise StoreError(
                redact(
                    f"cannot open the database {describe_url(db.url)}: {fault.description}", token
                )
            ) from None
        store = cls(backend, db, retry or RetryPolicy(), token)
        try:
            if url.startswith("file:"):
                # WAL lets readers run beside the one writer, and is remembered by the file.
                await store._run("PRAGMA journal_mode=WAL", [], "switch to WAL")
            await migrate(store._calls, db.table)
        except BaseException:
            await backend.close()
            raise
        return store

    async def close(self) -> None:
        await self._calls.backend.close()

    async def __aenter__(self) -> JobStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing ---------------------------------------------------------------------------

    async def _exec(self, call: Callable[[bool], Awaitable[T]], what: str) -> tuple[T, bool]:
        return await self._calls.exec(call, what)

    async def _run(self, sql: str, args: Args, what: str) -> tuple[ResultSet, bool]:
        return await self._calls.run(sql, args, what)

    async def _fenced(
        self,
        sql: str,
        args: Args,
        what: str,
        job_id: str,
        landed: Callable[[JobRow], bool],
    ) -> bool:
        """Run a conditional write; True if it changed the row (now or on a lost earlier try)."""
        rs, ambiguous = await self._run(sql, args, what)
        if rs.rows:
            return True
        if ambiguous:
            row = await self.get(job_id)
            return row is not None and landed(row)
        return False

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
        now = _now(now_ms)
        args: Args = [job_id, type, text, priority, max_retries, trace_id, run_after, now]
        rs, ambiguous = await self._run(self._sql.insert, args, f"insert job {job_id!r}")
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
            [job_id, _now(now_ms)],
            f"cancel job {job_id!r}",
            job_id,
            lambda row: row.status == "cancelled",
        )

    async def get(self, job_id: str) -> JobRow | None:
        rs, _ = await self._run(self._sql.get, [job_id], f"read job {job_id!r}")
        return _row(rs.rows[0]) if rs.rows else None

    async def get_many(self, job_ids: Sequence[str]) -> dict[str, JobRow]:
        out: dict[str, JobRow] = {}
        for chunk in _chunks(list(dict.fromkeys(job_ids))):
            rs, _ = await self._run(self._sql.get_many(len(chunk)), list(chunk), "read jobs")
            for values in rs.rows:
                row = _row(values)
                out[row.job_id] = row
        return out

    # -- controller: claim and run ----------------------------------------------------------

    async def claim(self, *, worker_id: str, limit: int, now_ms: int | None = None) -> Claim:
        """Claim up to `limit` rows in one statement; fail the invalid ones in one more."""
        now = _now(now_ms)
        # started_at identifies this claim among the worker's, which is how rows claimed by a
        # try whose answer was lost are found again; so two claims never share a millisecond.
        if self._claim_stamps.get(worker_id) == now:
            now += 1
        self._claim_stamps[worker_id] = now
        rows: dict[str, JobRow] = {}
        if limit > 0:
            args: Args = [worker_id, now, limit]

            def attempt(after_loss: bool) -> Awaitable[ResultSet]:
                sql = self._sql.claim_after_loss if after_loss else self._sql.claim
                return self._calls.backend.execute(sql, args)

            rs, ambiguous = await self._exec(attempt, f"claim for {worker_id!r}")
            rows = {r.job_id: r for r in map(_row, rs.rows)}
            if ambiguous:
                lost, _ = await self._run(
                    self._sql.claim_recover, [worker_id, now], "recover lost claim"
                )
                for r in map(_row, lost.rows):
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
            for chunk in _chunks(pending):
                args: Args = [
                    v for (job_id, attempt), error in chunk for v in (job_id, attempt, error)
                ]
                args.append(now)
                await self._run(self._sql.reject(len(chunk)), args, "fail invalid rows")
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
        now = _now(now_ms)
        for chunk in _chunks(unique):
            args: Args = []
            for b in chunk:
                progress = None if b.progress is None else max(0, min(100, int(b.progress)))
                args += [b.job_id, b.attempt, b.stage, progress]
            args.append(now)
            rs, _ = await self._run(self._sql.heartbeat(len(chunk)), args, "heartbeat")
            alive = {str(v[0]) for v in rs.rows}
            gone |= {b.job_id for b in chunk} - alive
        return gone

    async def set_k8s_job(self, job_id: str, attempt: int, k8s_job: str) -> WriteResult:
        return _wr(
            await self._fenced(
                self._sql.set_k8s_job,
                [job_id, attempt, k8s_job],
                f"record Job {k8s_job!r} for {job_id!r} attempt {attempt}",
                job_id,
                lambda row: row.attempt == attempt and row.k8s_job == k8s_job,
            )
        )

    async def complete(
        self, job_id: str, attempt: int, result: dict[str, Any], *, now_ms: int | None = None
    ) -> WriteResult:
        return _wr(
            await self._fenced(
                self._sql.complete,
                [job_id, attempt, json.dumps(result), _now(now_ms)],
                f"complete job {job_id!r} attempt {attempt}",
                job_id,
                lambda row: row.attempt == attempt and row.status == "complete",
            )
        )

    async def fail(
        self, job_id: str, attempt: int, *, error: str, kind: str, now_ms: int | None = None
    ) -> WriteResult:
        if kind not in FAIL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAIL_KINDS)}, got {kind!r}")
        return _wr(
            await self._fenced(
                self._sql.fail,
                [job_id, attempt, error, kind, _now(now_ms)],
                f"fail job {job_id!r} attempt {attempt}",
                job_id,
                lambda row: row.attempt == attempt and row.status == "failed",
            )
        )

    async def retry_or_fail(
        self,
        job_id: str,
        attempt: int,
        *,
        error: str,
        kind: str = "transient",
        backoff_seconds: float,
        now_ms: int | None = None,
    ) -> RetryOutcome:
        """Requeue after a transient failure (the pod is gone), or fail if retries are used up."""
        if kind not in FAIL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAIL_KINDS)}, got {kind!r}")
        now = _now(now_ms)
        run_after = now + round(backoff_seconds * 1000)
        rs, ambiguous = await self._run(
            self._sql.retry_or_fail,
            [job_id, attempt, error, kind, run_after, now],
            f"requeue job {job_id!r} attempt {attempt}",
        )
        if rs.rows:
            return "requeued" if rs.rows[0][0] == "pending" else "failed"
        if ambiguous:
            row = await self.get(job_id)
            if row is not None and row.attempt == attempt and row.error_kind == kind:
                if row.status == "pending":
                    return "requeued"
                if row.status == "failed":
                    return "failed"
        return "stale"

    async def finalize_cancelled(self, job_id: str, *, now_ms: int | None = None) -> WriteResult:
        """After the pod is confirmed gone: clear stage/progress and set finished_at."""
        return _wr(
            await self._fenced(
                self._sql.finalize_cancelled,
                [job_id, _now(now_ms)],
                f"finalize cancelled job {job_id!r}",
                job_id,
                lambda row: row.status == "cancelled" and row.finished_at is not None,
            )
        )

    # -- controller: reconcile, reaper, metrics ---------------------------------------------

    async def processing(self, *, worker_id: str | None = None) -> list[JobRow]:
        if worker_id is None:
            rs, _ = await self._run(self._sql.processing_all, [], "list processing rows")
        else:
            rs, _ = await self._run(self._sql.processing_by, [worker_id], "list processing rows")
        return [_row(v) for v in rs.rows]

    async def cancelled_unfinalized(self) -> list[JobRow]:
        rs, _ = await self._run(self._sql.cancelled_unfinalized, [], "list cancelled rows")
        return [_row(v) for v in rs.rows]

    async def stale_processing(
        self, *, older_than_ms: int, now_ms: int | None = None
    ) -> list[JobRow]:
        """Processing rows whose heartbeat (`updated_at`) is older than `older_than_ms`."""
        cutoff = _now(now_ms) - older_than_ms
        rs, _ = await self._run(self._sql.stale_processing, [cutoff], "list stale rows")
        return [_row(v) for v in rs.rows]

    async def counts(self) -> QueueCounts:
        rs, _ = await self._run(self._sql.counts, [], "count rows")
        pending, inflight = rs.rows[0]
        return QueueCounts(pending=int(pending), inflight=int(inflight))

    # -- attempts ledger and worker registry ------------------------------------------------

    async def attempt_started(
        self, job_id: str, attempt: int, *, pod: str | None, node: str | None, started_ms: int
    ) -> None:
        await self._run(
            self._sql.attempt_started,
            [job_id, attempt, pod, node, started_ms],
            f"record start of {job_id!r} attempt {attempt}",
        )

    async def attempt_ended(
        self,
        job_id: str,
        attempt: int,
        *,
        exit_code: int | None,
        reason: str | None,
        ended_ms: int,
    ) -> None:
        await self._run(
            self._sql.attempt_ended,
            [job_id, attempt, ended_ms, exit_code, reason],
            f"record end of {job_id!r} attempt {attempt}",
        )

    async def attempts(self, job_id: str) -> list[AttemptRow]:
        rs, _ = await self._run(self._sql.attempts, [job_id], f"read attempts of {job_id!r}")
        fields = tuple(AttemptRow.model_fields)
        return [AttemptRow.model_validate(dict(zip(fields, v, strict=True))) for v in rs.rows]

    async def register_worker(
        self, worker_id: str, version: str, *, now_ms: int | None = None
    ) -> None:
        await self._run(
            self._sql.register_worker,
            [worker_id, version, _now(now_ms)],
            f"register worker {worker_id!r}",
        )

    async def worker_heartbeat(
        self, worker_id: str, active: int, *, now_ms: int | None = None
    ) -> None:
        await self._run(
            self._sql.worker_heartbeat,
            [worker_id, active, _now(now_ms)],
            f"heartbeat of worker {worker_id!r}",
        )

    async def workers(self) -> list[WorkerRow]:
        rs, _ = await self._run(self._sql.workers, [], "list workers")
        fields = tuple(WorkerRow.model_fields)
        return [WorkerRow.model_validate(dict(zip(fields, v, strict=True))) for v in rs.rows]


def _now(given: int | None) -> int:
    return now_ms() if given is None else given


def _wr(applied: bool) -> WriteResult:
    return "applied" if applied else "stale"
