"""The job store's statements, rendered once for the configured table name.

Every transition of DESIGN.md is one of these conditional statements; `JobStore` only binds
values and reads answers.
"""

# ruff: noqa: S608  # SQL is assembled only from constants and checked identifiers; values are bound

from __future__ import annotations

from controller.store.models import JOB_COLUMNS
from controller.store.schema import rename

_COLS = ", ".join(JOB_COLUMNS)
_QCOLS = ", ".join(f"audio_jobs.{c}" for c in JOB_COLUMNS)


class Sql:
    """The statements, rendered once for the configured table name."""

    def __init__(self, table: str) -> None:
        def r(sql: str) -> str:
            return rename(sql, table)

        self.insert = r(
            "INSERT INTO audio_jobs (job_id, type, status, payload, priority, max_retries,"
            " trace_id, run_after, created_at, updated_at)"
            " VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, ?7, ?8, ?8)"
            " ON CONFLICT (job_id) DO NOTHING RETURNING 1"
        )
        # Pending rows are cancelled and finished in one step: no pod can exist for them, so
        # there is nothing for the controller to confirm (and KEDA need not wake it).
        self.cancel = r(
            "UPDATE audio_jobs SET status = 'cancelled', updated_at = ?2,"
            " finished_at = CASE WHEN status = 'pending' THEN ?2 END,"
            " error_kind = CASE WHEN status = 'pending' THEN 'cancelled' ELSE error_kind END,"
            " stage = CASE WHEN status = 'pending' THEN NULL ELSE stage END,"
            " progress = CASE WHEN status = 'pending' THEN 0 ELSE progress END"
            " WHERE job_id = ?1 AND status IN ('pending', 'processing') RETURNING 1"
        )
        self.get = r(f"SELECT {_COLS} FROM audio_jobs WHERE job_id = ?1")
        # The outer `+status` keeps SQLite from walking the whole pending index to test the
        # rowid list; the inner SELECT reads the pending index in claim order and stops at
        # LIMIT. One statement, so two controllers can never take the same row.
        claim = (
            "UPDATE audio_jobs SET status = 'processing', attempt = attempt + 1,"
            " claimed_by = ?1, started_at = ?2, updated_at = ?2,"
            " trace_id = COALESCE(trace_id, lower(hex(randomblob(16)))),"
            " stage = NULL, progress = 0, k8s_job = NULL, finished_at = NULL"
            " WHERE rowid IN (SELECT rowid FROM audio_jobs WHERE status = 'pending'"
            " AND (run_after IS NULL OR run_after <= ?2)"
            " ORDER BY priority DESC, created_at LIMIT {limit})"
            f" AND +status = 'pending' RETURNING {_COLS}"
        )
        self.claim = r(claim.replace("{limit}", "?3"))
        # After a try whose answer was lost, claim only what that try did not already take for
        # this (worker, claim time), so the batch never exceeds the limit.
        self.claim_after_loss = r(
            claim.replace(
                "{limit}",
                "max(0, ?3 - (SELECT COUNT(*) FROM audio_jobs WHERE status = 'processing'"
                " AND claimed_by = ?1 AND started_at = ?2 AND k8s_job IS NULL))",
            )
        )
        # Only used when a claim's answer was lost: the rows that try claimed for us.
        self.claim_recover = r(
            f"SELECT {_COLS} FROM audio_jobs WHERE status = 'processing'"
            " AND claimed_by = ?1 AND started_at = ?2 AND k8s_job IS NULL"
        )
        self.set_k8s_job = r(
            "UPDATE audio_jobs SET k8s_job = ?3"
            " WHERE job_id = ?1 AND attempt = ?2 AND status = 'processing' RETURNING 1"
        )
        self.finalize_cancelled = r(
            "UPDATE audio_jobs SET stage = NULL, progress = 0, finished_at = ?2,"
            " updated_at = ?2, error_kind = 'cancelled'"
            " WHERE job_id = ?1 AND status = 'cancelled' AND finished_at IS NULL RETURNING 1"
        )
        self.processing_all = r(
            f"SELECT {_COLS} FROM audio_jobs WHERE status = 'processing' ORDER BY updated_at"
        )
        self.processing_by = r(
            f"SELECT {_COLS} FROM audio_jobs WHERE status = 'processing' AND claimed_by = ?1"
            " ORDER BY updated_at"
        )
        self.cancelled_unfinalized = r(
            f"SELECT {_COLS} FROM audio_jobs WHERE status = 'cancelled'"
            " AND finished_at IS NULL ORDER BY updated_at"
        )
        self.stale_processing = r(
            f"SELECT {_COLS} FROM audio_jobs WHERE status = 'processing'"
            " AND updated_at < ?1 ORDER BY updated_at"
        )
        # Each count walks one partial index and stops after ?1 entries: Turso bills every row
        # a statement reads, and this runs on every KEDA poll and scrape, so its cost must not
        # grow with the backlog (a plain COUNT read all 50,000 rows of a 50,000-row backlog).
        # Both figures saturate at ?1, the cap (settings.metrics.queue_count_cap).
        self.counts = r(
            "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM audio_jobs"
            " WHERE status = 'pending' LIMIT ?1)),"
            " min(?1, (SELECT COUNT(*) FROM (SELECT 1 FROM audio_jobs"
            " WHERE status = 'processing' LIMIT ?1))"
            " + (SELECT COUNT(*) FROM (SELECT 1 FROM audio_jobs WHERE status = 'cancelled'"
            " AND finished_at IS NULL LIMIT ?1)))"
        )
        self.attempt_started = r(
            "INSERT INTO audio_job_attempts (job_id, attempt, pod, node, started_at)"
            " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (job_id, attempt) DO UPDATE SET"
            " pod = COALESCE(excluded.pod, pod), node = COALESCE(excluded.node, node),"
            " started_at = COALESCE(started_at, excluded.started_at)"
        )
        self.attempt_ended = r(
            "INSERT INTO audio_job_attempts (job_id, attempt, ended_at, exit_code, reason)"
            " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (job_id, attempt) DO UPDATE SET"
            " ended_at = excluded.ended_at, exit_code = excluded.exit_code,"
            " reason = excluded.reason"
        )
        self.attempts = r(
            "SELECT job_id, attempt, pod, node, started_at, ended_at, exit_code, reason"
            " FROM audio_job_attempts WHERE job_id = ?1 ORDER BY attempt"
        )
        self.register_worker = r(
            "INSERT INTO audio_job_workers (worker_id, version, started_at, last_seen, active)"
            " VALUES (?1, ?2, ?3, ?3, 0) ON CONFLICT (worker_id) DO UPDATE SET"
            " version = excluded.version, started_at = excluded.started_at,"
            " last_seen = excluded.last_seen, active = 0"
        )
        self.worker_heartbeat = r(
            "INSERT INTO audio_job_workers (worker_id, version, started_at, last_seen, active)"
            " VALUES (?1, '', ?3, ?3, ?2) ON CONFLICT (worker_id) DO UPDATE SET"
            " last_seen = excluded.last_seen, active = excluded.active"
        )
        self.workers = r(
            "SELECT worker_id, version, started_at, last_seen, active FROM audio_job_workers"
            " ORDER BY worker_id"
        )
        self.table = table

    def heartbeat(self, n: int) -> str:
        values = ", ".join(["(?, ?, ?, ?)"] * n)
        return rename(
            f"WITH beats (job_id, attempt, stage, progress) AS (VALUES {values})"
            f" UPDATE audio_jobs SET updated_at = ?{4 * n + 1},"
            " stage = COALESCE(beats.stage, audio_jobs.stage),"
            " progress = COALESCE(beats.progress, audio_jobs.progress)"
            " FROM beats WHERE audio_jobs.job_id = beats.job_id"
            " AND audio_jobs.attempt = beats.attempt AND audio_jobs.status = 'processing'"
            " RETURNING audio_jobs.job_id",
            self.table,
        )

    def reject(self, n: int) -> str:
        values = ", ".join(["(?, ?, ?)"] * n)
        return rename(
            f"WITH bad (job_id, attempt, error) AS (VALUES {values})"
            " UPDATE audio_jobs SET status = 'failed', error = bad.error,"
            f" error_kind = 'permanent', stage = NULL, finished_at = ?{3 * n + 1},"
            f" updated_at = ?{3 * n + 1}"
            " FROM bad WHERE audio_jobs.job_id = bad.job_id"
            " AND audio_jobs.attempt = bad.attempt AND audio_jobs.status = 'processing'"
            " RETURNING audio_jobs.job_id",
            self.table,
        )

    # Outcomes: one statement for many rows of one kind. `v` holds (job id, attempt, values)
    # per row; the last parameter is the clock. The fence is the single-row one: the row must
    # still be at that attempt and `processing` (not cancelled meanwhile, not taken over).

    def complete(self, n: int) -> str:
        return self._outcome(
            n,
            "result",
            "status = 'complete', result = v.result, progress = 100, error = NULL,"
            " error_kind = NULL, finished_at = {now}, updated_at = {now}",
        )

    def fail(self, n: int) -> str:
        return self._outcome(
            n,
            "error, kind",
            "status = 'failed', error = v.error, error_kind = v.kind,"
            " finished_at = {now}, updated_at = {now}",
        )

    def retry_or_fail(self, n: int) -> str:
        """Requeue each row if it has retries left, else fail it. SET expressions all see the
        row as it was, so `retry_count < max_retries` decides every column consistently."""
        more = "audio_jobs.retry_count < audio_jobs.max_retries"
        return self._outcome(
            n,
            "error, kind, run_after",
            f"status = CASE WHEN {more} THEN 'pending' ELSE 'failed' END,"
            f" retry_count = audio_jobs.retry_count + ({more}),"
            f" run_after = CASE WHEN {more} THEN v.run_after ELSE audio_jobs.run_after END,"
            f" error = CASE WHEN {more} THEN v.error ELSE v.error || ' (retries used up)' END,"
            " error_kind = v.kind,"
            f" k8s_job = CASE WHEN {more} THEN NULL ELSE audio_jobs.k8s_job END,"
            f" claimed_by = CASE WHEN {more} THEN NULL ELSE audio_jobs.claimed_by END,"
            f" stage = CASE WHEN {more} THEN NULL ELSE audio_jobs.stage END,"
            f" progress = CASE WHEN {more} THEN 0 ELSE audio_jobs.progress END,"
            f" finished_at = CASE WHEN {more} THEN NULL ELSE {{now}} END,"
            " updated_at = {now}",
        )

    def _outcome(self, n: int, columns: str, assignments: str) -> str:
        width = 2 + len(columns.split(","))
        values = ", ".join(["(" + ", ".join(["?"] * width) + ")"] * n)
        return rename(
            f"WITH v (job_id, attempt, {columns}) AS (VALUES {values})"
            f" UPDATE audio_jobs SET {assignments.replace('{now}', f'?{width * n + 1}')}"
            " FROM v WHERE audio_jobs.job_id = v.job_id AND audio_jobs.attempt = v.attempt"
            " AND audio_jobs.status = 'processing'"
            " RETURNING audio_jobs.job_id, audio_jobs.status",
            self.table,
        )

    def get_many(self, n: int) -> str:
        marks = ", ".join(["?"] * n)
        return rename(f"SELECT {_COLS} FROM audio_jobs WHERE job_id IN ({marks})", self.table)
