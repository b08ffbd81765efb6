"""The job store's statements, rendered once for the configured table name.

Every transition of a row's life (docs/job-table.md) is one of these conditional statements;
`JobStore` only binds values and reads answers. Values are named by role (`:job_id`, `:now`,
see `params.Stmt`); the rows of a batch are the anonymous `?` of its `VALUES` list.
"""

# ruff: noqa: S608  # SQL is assembled only from constants and checked identifiers; values are bound

from __future__ import annotations

from functools import cache

from controller.store.models import JOB_COLUMNS
from controller.store.params import Stmt

_COLS = ", ".join(JOB_COLUMNS)

DB_NOW = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
"""The database's clock in epoch ms (the schema's own default for `created_at`)."""

DB_CLOCK = f"COALESCE(:db_clock, {DB_NOW})"
"""The database's clock, or the value tests pin it to (`:db_clock` is NULL in production)."""


class Sql:
    """The statements, rendered once for the configured table name."""

    def __init__(self, table: str) -> None:
        self.table = table

        def s(sql: str) -> Stmt:
            return Stmt(sql, table)

        self.insert = s(
            "INSERT INTO audio_jobs (job_id, type, status, payload, priority, max_retries,"
            " trace_id, run_after, created_at, updated_at)"
            " VALUES (:job_id, :type, 'pending', :payload, :priority, :max_retries,"
            " :trace_id, :run_after, :now, :now)"
            " ON CONFLICT (job_id) DO NOTHING RETURNING 1"
        )
        # Pending rows are cancelled and finished in one step: no pod can exist for them, so
        # there is nothing for the controller to confirm (and KEDA need not wake it).
        self.cancel = s(
            "UPDATE audio_jobs SET status = 'cancelled', updated_at = :now,"
            " finished_at = CASE WHEN status = 'pending' THEN :now END,"
            " error_kind = CASE WHEN status = 'pending' THEN 'cancelled' ELSE error_kind END,"
            " stage = CASE WHEN status = 'pending' THEN NULL ELSE stage END,"
            " progress = CASE WHEN status = 'pending' THEN 0 ELSE progress END"
            " WHERE job_id = :job_id AND status IN ('pending', 'processing') RETURNING 1"
        )
        self.get = s(f"SELECT {_COLS} FROM audio_jobs WHERE job_id = :job_id")
        # Only used when a claim's answer was lost: the rows that try claimed for us.
        self.claim_recover = s(
            f"SELECT {_COLS} FROM audio_jobs WHERE status = 'processing'"
            " AND claimed_by = :me AND started_at = :now AND k8s_job IS NULL"
        )
        self.finalize_cancelled = s(
            "UPDATE audio_jobs SET stage = NULL, progress = 0, finished_at = :now,"
            " updated_at = :now, error_kind = 'cancelled'"
            " WHERE job_id = :job_id AND status = 'cancelled' AND finished_at IS NULL"
            " RETURNING 1"
        )
        self.processing_by = s(
            f"SELECT {_COLS} FROM audio_jobs WHERE status = 'processing' AND claimed_by = :me"
            " ORDER BY updated_at"
        )
        self.cancelled_unfinalized = s(
            f"SELECT {_COLS} FROM audio_jobs WHERE status = 'cancelled'"
            " AND finished_at IS NULL ORDER BY updated_at"
        )
        # Each count walks one partial index and stops after :cap entries: Turso bills every
        # row a statement reads, and this runs on every KEDA poll and scrape, so its cost must
        # not grow with the backlog (a plain COUNT read all 50,000 rows of a 50,000-row
        # backlog). Both figures saturate at :cap (settings.metrics.queue_count_cap).
        self.counts = s(
            "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM audio_jobs"
            " WHERE status = 'pending' LIMIT :cap)),"
            " min(:cap, (SELECT COUNT(*) FROM (SELECT 1 FROM audio_jobs"
            " WHERE status = 'processing' LIMIT :cap))"
            " + (SELECT COUNT(*) FROM (SELECT 1 FROM audio_jobs WHERE status = 'cancelled'"
            " AND finished_at IS NULL LIMIT :cap)))"
        )
        self.attempts = s(
            "SELECT job_id, attempt, pod, node, started_at, ended_at, exit_code, reason"
            " FROM audio_job_attempts WHERE job_id = :job_id ORDER BY attempt"
        )
        self.workers = s(
            "SELECT worker_id, version, started_at, last_seen, active, longest_run_ms"
            " FROM audio_job_workers ORDER BY worker_id"
        )

    @cache  # noqa: B019  # one Sql per store, a handful of batch sizes
    def claim(self, n_types: int, *, after_loss: bool) -> Stmt:
        """Claim up to `:limit` pending rows, stamping each with the run deadline of its type.

        The outer `+status` keeps SQLite from walking the whole pending index to test the
        rowid list; the inner SELECT reads the pending index in claim order and stops at
        LIMIT. One statement, so two controllers can never take the same row. The deadlines
        are (type, ms) pairs bound as values, so no job type is named here; a type they do not
        name (it fails validation right after) gets `:longest_ms`.

        `after_loss`: after a try whose answer was lost, claim only what that try did not
        already take for this (worker, claim time), so the batch never exceeds the limit.
        """
        limit = ":limit"
        if after_loss:
            limit = (
                "max(0, :limit - (SELECT COUNT(*) FROM audio_jobs WHERE status = 'processing'"
                " AND claimed_by = :me AND started_at = :now AND k8s_job IS NULL))"
            )
        by_type = " ".join(["WHEN ? THEN ?"] * n_types)
        run_ms = f"CASE type {by_type} ELSE :longest_ms END" if n_types else ":longest_ms"
        return Stmt(
            "UPDATE audio_jobs SET status = 'processing', attempt = attempt + 1,"
            " claimed_by = :me, started_at = :now, updated_at = :now,"
            f" run_deadline = {DB_CLOCK} + {run_ms},"
            " trace_id = COALESCE(trace_id, lower(hex(randomblob(16)))),"
            " stage = NULL, progress = 0, k8s_job = NULL, finished_at = NULL"
            " WHERE rowid IN (SELECT rowid FROM audio_jobs WHERE status = 'pending'"
            " AND (run_after IS NULL OR run_after <= :now)"
            f" ORDER BY priority DESC, created_at LIMIT {limit})"
            f" AND +status = 'pending' RETURNING {_COLS}",
            self.table,
        )

    @cache  # noqa: B019
    def heartbeat(self, n: int) -> Stmt:
        values = ", ".join(["(?, ?, ?, ?)"] * n)
        return Stmt(
            f"WITH beats (job_id, attempt, stage, progress) AS (VALUES {values})"
            " UPDATE audio_jobs SET updated_at = :now,"
            " stage = COALESCE(beats.stage, audio_jobs.stage),"
            " progress = COALESCE(beats.progress, audio_jobs.progress)"
            " FROM beats WHERE audio_jobs.job_id = beats.job_id"
            " AND audio_jobs.attempt = beats.attempt AND audio_jobs.status = 'processing'"
            " RETURNING audio_jobs.job_id",
            self.table,
        )

    @cache  # noqa: B019
    def reject(self, n: int) -> Stmt:
        values = ", ".join(["(?, ?, ?)"] * n)
        return Stmt(
            f"WITH bad (job_id, attempt, error) AS (VALUES {values})"
            " UPDATE audio_jobs SET status = 'failed', error = bad.error,"
            " error_kind = 'permanent', stage = NULL, finished_at = :now, updated_at = :now,"
            " run_deadline = NULL"
            " FROM bad WHERE audio_jobs.job_id = bad.job_id"
            " AND audio_jobs.attempt = bad.attempt AND audio_jobs.status = 'processing'"
            " RETURNING audio_jobs.job_id",
            self.table,
        )

    # Outcomes: one statement for many rows of one kind. `v` holds (job id, attempt, values)
    # per row. The fence is the single-row one: the row must still be at that attempt and
    # `processing` (not cancelled meanwhile, not taken over).

    @cache  # noqa: B019
    def complete(self, n: int) -> Stmt:
        return self._outcome(
            n,
            "result",
            "status = 'complete', result = v.result, progress = 100, error = NULL,"
            " error_kind = NULL, finished_at = :now, updated_at = :now",
        )

    @cache  # noqa: B019
    def fail(self, n: int) -> Stmt:
        return self._outcome(
            n,
            "error, kind",
            "status = 'failed', error = v.error, error_kind = v.kind,"
            " finished_at = :now, updated_at = :now",
        )

    @cache  # noqa: B019
    def retry_or_fail(self, n: int) -> Stmt:
        """Requeue each row if it has retries left, else fail it with `last_error`. SET
        expressions all see the row as it was, so `retry_count < max_retries` decides every
        column consistently; the answer's status (`pending` or `failed`) says which it was."""
        more = "audio_jobs.retry_count < audio_jobs.max_retries"
        return self._outcome(
            n,
            "error, last_error, kind, run_after",
            f"status = CASE WHEN {more} THEN 'pending' ELSE 'failed' END,"
            f" retry_count = audio_jobs.retry_count + ({more}),"
            f" run_after = CASE WHEN {more} THEN v.run_after ELSE audio_jobs.run_after END,"
            f" error = CASE WHEN {more} THEN v.error ELSE v.last_error END,"
            " error_kind = v.kind,"
            f" k8s_job = CASE WHEN {more} THEN NULL ELSE audio_jobs.k8s_job END,"
            f" claimed_by = CASE WHEN {more} THEN NULL ELSE audio_jobs.claimed_by END,"
            f" stage = CASE WHEN {more} THEN NULL ELSE audio_jobs.stage END,"
            f" progress = CASE WHEN {more} THEN 0 ELSE audio_jobs.progress END,"
            f" finished_at = CASE WHEN {more} THEN NULL ELSE :now END,"
            " updated_at = :now",
        )

    def _outcome(self, n: int, columns: str, assignments: str) -> Stmt:
        width = 2 + len(columns.split(","))
        values = ", ".join(["(" + ", ".join(["?"] * width) + ")"] * n)
        # A row that leaves `processing` has no run deadline any more: the next claim or
        # takeover writes its own.
        return Stmt(
            f"WITH v (job_id, attempt, {columns}) AS (VALUES {values})"
            f" UPDATE audio_jobs SET {assignments}, run_deadline = NULL"
            " FROM v WHERE audio_jobs.job_id = v.job_id AND audio_jobs.attempt = v.attempt"
            " AND audio_jobs.status = 'processing'"
            " RETURNING audio_jobs.job_id, audio_jobs.status",
            self.table,
        )

    @cache  # noqa: B019
    def get_many(self, n: int) -> Stmt:
        marks = ", ".join(["?"] * n)
        return Stmt(f"SELECT {_COLS} FROM audio_jobs WHERE job_id IN ({marks})", self.table)
