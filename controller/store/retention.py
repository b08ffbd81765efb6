"""Retention: finished rows older than the kept period are deleted, with their attempts ledger
rows, a small batch at a time.

Finished means `complete`, `failed`, or `cancelled` and finalized (`finished_at` set); a row still
pending, running or waiting for its pod to go is never touched, whatever its age. Each batch is
one transaction of two statements that pick the same oldest rows through the partial index
`audio_job_ix_finished`, so it reads only the rows it deletes (Turso bills every row read) and
holds the write lock only briefly: claims wait for one batch at most.
"""

# ruff: noqa: S608  # SQL is assembled only from constants and checked identifiers; values are bound

from __future__ import annotations

from controller.store.params import Stmt
from controller.store.store import JobStore

# The WHERE repeats the index's own condition so SQLite may use it; (finished_at, rowid) is
# the index's order, so both statements pick the same rows.
_OLDEST = (
    "SELECT {col} FROM audio_jobs WHERE status IN ('complete', 'failed', 'cancelled')"
    " AND finished_at IS NOT NULL AND finished_at < :cutoff ORDER BY finished_at, rowid"
    " LIMIT :limit"
)


class Retention:
    """Retention statements on top of a JobStore (same client, retries and metrics)."""

    def __init__(self, store: JobStore, table: str = "audio_jobs") -> None:
        self._store = store
        # Ledger rows first: they are found through the job rows about to go.
        # (Selecting job_id straight from the index scan: a nested `rowid IN` let SQLite,
        # with ANALYZE statistics, walk the whole primary-key index instead.)
        oldest = _OLDEST.format(col="job_id")
        self._attempts = Stmt(f"DELETE FROM audio_job_attempts WHERE job_id IN ({oldest})", table)
        self._jobs = Stmt(
            f"DELETE FROM audio_jobs WHERE rowid IN ({_OLDEST.format(col='rowid')})", table
        )

    async def prune(self, *, finished_before_ms: int, limit: int) -> int:
        """Delete up to `limit` of the oldest rows finished before the cutoff, and their ledger
        rows, in one transaction; return how many job rows went (fewer than `limit`: done)."""
        (_, jobs), _ = await self._store._batch(
            [self._attempts, self._jobs],
            {"cutoff": finished_before_ms, "limit": limit},
            f"prune up to {limit} rows finished before {finished_before_ms}",
        )
        return jobs.rows_affected
