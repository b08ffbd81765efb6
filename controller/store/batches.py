"""Bookkeeping for many rows in one statement: Job names and the attempts ledger.

The engine creates Jobs for a whole claim batch at once and sees many pods start or end in one
cycle; one statement per kind per cycle keeps the database cost per job low (Turso bills every
statement). Every write here is safe to repeat: fenced by `attempt` and `status`, or an upsert.
"""

# ruff: noqa: S608  # SQL is assembled only from constants and checked identifiers; values are bound

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controller.store.rows import chunks
from controller.store.schema import rename
from controller.store.store import JobStore


@dataclass(frozen=True, slots=True)
class Started:
    job_id: str
    attempt: int
    pod: str | None
    node: str | None
    started_ms: int


@dataclass(frozen=True, slots=True)
class Ended:
    job_id: str
    attempt: int
    exit_code: int | None
    reason: str | None
    ended_ms: int


class Batches:
    def __init__(self, store: JobStore, table: str = "audio_jobs") -> None:
        self._store = store
        self._table = table

    def _sql(self, sql: str) -> str:
        return rename(sql, self._table)

    async def set_k8s_jobs(self, jobs: Sequence[tuple[str, int, str]]) -> None:
        """Record the Job name of each (job id, attempt) still processing at that attempt."""
        for chunk in chunks(jobs):
            values = ", ".join(["(?, ?, ?)"] * len(chunk))
            sql = self._sql(
                f"WITH v (job_id, attempt, k8s_job) AS (VALUES {values})"
                " UPDATE audio_jobs SET k8s_job = v.k8s_job FROM v"
                " WHERE audio_jobs.job_id = v.job_id AND audio_jobs.attempt = v.attempt"
                " AND audio_jobs.status = 'processing'"
            )
            args = [x for job in chunk for x in job]
            await self._store._run(sql, args, f"record {len(chunk)} Job names")

    async def attempts_started(self, started: Sequence[Started]) -> None:
        await self._ledger(
            "pod, node, started_at",
            "pod = COALESCE(excluded.pod, pod), node = COALESCE(excluded.node, node),"
            " started_at = COALESCE(started_at, excluded.started_at)",
            [(s.job_id, s.attempt, s.pod, s.node, s.started_ms) for s in started],
            "start",
        )

    async def attempts_ended(self, ended: Sequence[Ended]) -> None:
        await self._ledger(
            "ended_at, exit_code, reason",
            "ended_at = excluded.ended_at, exit_code = excluded.exit_code,"
            " reason = excluded.reason",
            [(e.job_id, e.attempt, e.ended_ms, e.exit_code, e.reason) for e in ended],
            "end",
        )

    async def _ledger(
        self, columns: str, update: str, values: Sequence[tuple[object, ...]], what: str
    ) -> None:
        """Upsert (job_id, attempt, three columns) rows of the attempts ledger."""
        for chunk in chunks(values):
            marks = ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk))
            sql = self._sql(
                f"INSERT INTO audio_job_attempts (job_id, attempt, {columns}) VALUES {marks}"
                f" ON CONFLICT (job_id, attempt) DO UPDATE SET {update}"
            )
            args = [x for row in chunk for x in row]
            await self._store._run(sql, args, f"record the {what} of {len(chunk)} attempts")
