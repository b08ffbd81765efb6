"""Bookkeeping for many rows in one statement: Job names and the attempts ledger.

The engine creates Jobs for a whole claim batch at once and sees many pods start or end in one
cycle; one statement per kind per cycle keeps the database cost per job low (Turso bills every
statement). Every write here is safe to repeat: fenced by `attempt` and `status`, or an upsert.
"""

# ruff: noqa: S608  # SQL is assembled only from constants and checked identifiers; values are bound

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from controller.store.params import Stmt
from controller.store.rows import chunks
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

    async def set_k8s_jobs(self, jobs: Sequence[tuple[str, int, str]]) -> None:
        """Record the Job name of each (job id, attempt) still processing at that attempt."""
        for chunk in chunks(jobs):
            await self._store._call(
                _set_k8s_jobs(self._table, len(chunk)),
                f"record {len(chunk)} Job names",
                [x for job in chunk for x in job],
            )

    async def record(
        self, jobs: Sequence[tuple[str, int, str]], started: Sequence[Started]
    ) -> None:
        """`set_k8s_jobs` and `attempts_started` in one request: a cycle waits on it, and
        hosted Turso is a round trip away (bench/README.md, run T)."""
        stmts = [
            (_set_k8s_jobs(self._table, len(chunk)).sql, [x for job in chunk for x in job])
            for chunk in chunks(jobs)
        ] + [
            (
                _upsert_ledger(self._table, len(chunk), *_STARTED).sql,
                [x for s in chunk for x in (s.job_id, s.attempt, s.pod, s.node, s.started_ms)],
            )
            for chunk in chunks(started)
        ]
        if len(stmts) == 1:
            sql, args = stmts[0]
            await self._store._calls.run(sql, args, _what(jobs, started))
        elif stmts:
            await self._store._calls.batch(stmts, _what(jobs, started), kind="job_name")

    async def attempts_started(self, started: Sequence[Started]) -> None:
        await self._ledger(
            _STARTED, [(s.job_id, s.attempt, s.pod, s.node, s.started_ms) for s in started], "start"
        )

    async def attempts_ended(self, ended: Sequence[Ended]) -> None:
        """The first end recorded for an attempt stays: a takeover's "taken over" (written
        with the takeover itself) is not overwritten by the old owner's late outcome."""
        await self._ledger(
            _ENDED, [(e.job_id, e.attempt, e.ended_ms, e.exit_code, e.reason) for e in ended], "end"
        )

    async def _ledger(
        self, kind: tuple[str, str], values: Sequence[tuple[object, ...]], what: str
    ) -> None:
        """Upsert (job_id, attempt, three columns) rows of the attempts ledger."""
        for chunk in chunks(values):
            await self._store._call(
                _upsert_ledger(self._table, len(chunk), *kind),
                f"record the {what} of {len(chunk)} attempts",
                [x for row in chunk for x in row],
            )


def _what(jobs: Sequence[object], started: Sequence[object]) -> str:
    parts = [f"{len(jobs)} Job names"] if jobs else []
    parts += [f"the start of {len(started)} attempts"] if started else []
    return f"record {' and '.join(parts)}"


_STARTED = (
    "pod, node, started_at",
    "pod = COALESCE(excluded.pod, pod), node = COALESCE(excluded.node, node),"
    " started_at = COALESCE(started_at, excluded.started_at)",
)
_ENDED = (
    "ended_at, exit_code, reason",
    "ended_at = excluded.ended_at, exit_code = excluded.exit_code, reason = excluded.reason"
    " WHERE audio_job_attempts.ended_at IS NULL",
)


@cache
def _set_k8s_jobs(table: str, n: int) -> Stmt:
    values = ", ".join(["(?, ?, ?)"] * n)
    return Stmt(
        f"WITH v (job_id, attempt, k8s_job) AS (VALUES {values})"
        " UPDATE audio_jobs SET k8s_job = v.k8s_job FROM v"
        " WHERE audio_jobs.job_id = v.job_id AND audio_jobs.attempt = v.attempt"
        " AND audio_jobs.status = 'processing'",
        table,
    )


@cache
def _upsert_ledger(table: str, n: int, columns: str, update: str) -> Stmt:
    marks = ", ".join(["(?, ?, ?, ?, ?)"] * n)
    return Stmt(
        f"INSERT INTO audio_job_attempts (job_id, attempt, {columns}) VALUES {marks}"
        f" ON CONFLICT (job_id, attempt) DO UPDATE SET {update}",
        table,
    )
