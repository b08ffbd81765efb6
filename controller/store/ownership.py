"""Installations sharing one job table: their liveness, and taking over a dead one's rows.

An installation's row in the workers table (`worker_id` = the installation id) is its lease on
the rows it claimed (`claimed_by` = the same id). `last_seen` is written AND compared with the
database's own clock, so no controller's clock takes part in judging whether an owner is alive.

A row's run deadline is its owner's: the claimer wrote it on the row (`run_deadline`, the
database's clock plus the claimer's own pending + run timeout + grace + margin), so a taker
with shorter timeouts still waits as long as the owner's pods may run. A takeover is ONE
conditional UPDATE that re-checks everything (owner still dead, attempt unchanged, still
processing, run deadline passed), so of two takers exactly one wins, and it bumps `attempt`,
so anything the old owner might still write about its attempt is stale. The old attempt's end
goes into the attempts ledger in the same transaction, so no late write of the old owner comes
first.

Rows without a run deadline (claimed by a controller older than schema version 2) are judged
by the longest deadline that either the taker or, where its worker row says, the owner gives
any job type, counted from the claim.
"""

# ruff: noqa: S608  # SQL is assembled only from constants and checked identifiers; values are bound

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.store.models import JOB_COLUMNS, JobRow
from controller.store.params import Stmt
from controller.store.rows import job_row, resolve_now
from controller.store.sql import DB_CLOCK
from controller.store.store import JobStore

_COLS = ", ".join(JOB_COLUMNS)
_QCOLS = ", ".join(f"j.{c}" for c in JOB_COLUMNS)

_OWNER_LONGEST = (
    "COALESCE((SELECT o.longest_run_ms FROM audio_job_workers o"
    " WHERE o.worker_id = j.claimed_by), 0)"
)
_DEAD = (
    "NOT EXISTS (SELECT 1 FROM audio_job_workers w WHERE w.worker_id = j.claimed_by"
    f" AND w.last_seen >= {DB_CLOCK} - :lease_ms)"
)
_PAST_DEADLINE = (
    "COALESCE(j.run_deadline, COALESCE(j.started_at, j.updated_at)"
    f" + max(:longest_ms, {_OWNER_LONGEST})) <= {DB_CLOCK}"
)


@dataclass(frozen=True, slots=True)
class Orphan:
    """A row whose owner's lease ran out (judged by the database's clock)."""

    row: JobRow
    past_deadline: bool
    """Its attempt's run deadline has passed: no pod of it can still be running."""


class Ownership:
    """Ownership statements on top of a JobStore (same client, retries and fencing)."""

    def __init__(self, store: JobStore, table: str = "audio_jobs") -> None:
        self._store = store
        self._beat = Stmt(
            "INSERT INTO audio_job_workers"
            " (worker_id, version, started_at, last_seen, active, longest_run_ms)"
            f" VALUES (:me, :version, {DB_CLOCK}, {DB_CLOCK}, :active, :longest_ms)"
            " ON CONFLICT (worker_id) DO UPDATE SET version = excluded.version,"
            " last_seen = excluded.last_seen, active = excluded.active,"
            " longest_run_ms = excluded.longest_run_ms,"
            " started_at = CASE WHEN :start THEN excluded.started_at ELSE started_at END",
            table,
        )
        # One statement per check, also when nothing is eligible: every cancelled row still
        # open, then up to :limit processing rows. The gate leads the join: it opens only
        # while some other installation's worker row is stale but younger than the window in
        # which its rows become eligible (see `dead_rows`). Otherwise, the common case, the
        # check reads the workers table and no job row at all.
        gate = (
            "WITH gate AS (SELECT 1 WHERE :look_anyway OR EXISTS (SELECT 1"
            " FROM audio_job_workers g WHERE g.worker_id IS NOT :me"
            f" AND g.last_seen < {DB_CLOCK} - :lease_ms AND g.last_seen >= {DB_CLOCK}"
            " - 2 * (:lease_ms + max(:longest_ms, COALESCE(g.longest_run_ms, 0)))))"
        )
        rows = f"SELECT {_QCOLS}, {_PAST_DEADLINE} FROM gate CROSS JOIN audio_jobs j WHERE"
        theirs = f"j.claimed_by IS NOT :me AND {_DEAD}"
        self._dead_rows = Stmt(
            f"{gate} SELECT * FROM ({rows} j.status = 'cancelled' AND j.finished_at IS NULL"
            f" AND {theirs}) UNION ALL SELECT * FROM ({rows} j.status = 'processing'"
            f" AND {theirs} ORDER BY j.updated_at LIMIT :limit)",
            table,
        )
        # :now starts the new attempt on this controller's clock, like a claim; :at_once = 1
        # when the taker saw the old Job finished in its own view (then the deadline need not
        # pass).
        self._take_over = Stmt(
            "UPDATE audio_jobs AS j SET attempt = j.attempt + 1, claimed_by = :me,"
            " started_at = :now, updated_at = :now,"
            f" run_deadline = {DB_CLOCK} + :run_ms,"
            " stage = NULL, progress = 0, k8s_job = NULL"
            " WHERE j.job_id = :job_id AND j.attempt = :attempt AND j.status = 'processing'"
            f" AND j.claimed_by IS :owner AND {_DEAD} AND (:at_once OR {_PAST_DEADLINE})"
            f" RETURNING {_COLS}",
            table,
        )
        self._ended = Stmt(
            "INSERT INTO audio_job_attempts (job_id, attempt, ended_at, reason)"
            " SELECT :job_id, :attempt, :now, :reason WHERE EXISTS (SELECT 1 FROM audio_jobs"
            " WHERE job_id = :job_id AND attempt = :attempt + 1 AND claimed_by = :me)"
            " ON CONFLICT (job_id, attempt) DO UPDATE SET ended_at = excluded.ended_at,"
            " reason = excluded.reason WHERE audio_job_attempts.ended_at IS NULL",
            table,
        )

    async def beat(
        self,
        installation: str,
        version: str,
        active: int,
        *,
        longest_ms: int,
        start: bool = False,
        now: int | None = None,
    ) -> None:
        """Renew this installation's lease; `start` also stamps `started_at`. `longest_ms`:
        the longest run deadline it gives any attempt (how long its pods may outlive it)."""
        await self._store._call(
            self._beat,
            "installation heartbeat",
            me=installation,
            version=version,
            active=active,
            longest_ms=longest_ms,
            start=int(start),
            db_clock=now,
        )

    async def dead_rows(
        self,
        *,
        me: str,
        lease_ms: int,
        longest_ms: int,
        limit: int,
        gated: bool = True,
        now: int | None = None,
    ) -> list[Orphan]:
        """Rows of installations whose lease ran out: every cancelled row still waiting for its
        pod to be confirmed gone, then up to `limit` processing rows, oldest heartbeat first.

        The gated check looks only while an installation's worker row is between `lease_ms`
        and `2 * (lease_ms + L)` old, L the longest run deadline of the owner's worker row or
        the taker's `longest_ms`, whichever is longer: each of its rows becomes eligible in
        that window (an owner claims only within a worker heartbeat of its last beat, at most
        half the lease, and a row is past its deadline at most L after its claim).
        `gated=False` looks regardless: for rows left over after the window (the takers were
        full) and rows whose owner never had a worker row.
        """
        rs, _ = await self._store._call(
            self._dead_rows,
            "list rows of dead installations",
            me=me,
            lease_ms=lease_ms,
            longest_ms=longest_ms,
            limit=max(limit, 0),
            look_anyway=int(not gated),
            db_clock=now,
        )
        return [_orphan(v) for v in rs.rows]

    async def take_over(
        self,
        row: JobRow,
        *,
        me: str,
        lease_ms: int,
        deadlines_ms: Mapping[str, int],
        at_once: bool,
        now: int | None = None,
    ) -> JobRow | None:
        """Claim a dead installation's row as a new attempt with this installation's run
        deadline for its type; None if anything changed since (owner back, row moved on,
        another taker won, deadline not yet passed). The old attempt's ledger line says it
        was taken over, in the same transaction."""
        longest = max(deadlines_ms.values())
        roles: dict[str, Any] = {
            "me": me,
            "owner": row.claimed_by,
            "job_id": row.job_id,
            "attempt": row.attempt,
            "lease_ms": lease_ms,
            "longest_ms": longest,
            "run_ms": deadlines_ms.get(row.type, longest),
            "at_once": int(at_once),
            "now": resolve_now(now),
            "db_clock": now,
            "reason": f"taken over: installation {row.claimed_by} stopped",
        }
        # Not retried blind: a lost answer is resolved by reading the row back.
        (taken, _), ambiguous = await self._store._batch(
            [self._take_over, self._ended], roles, f"take over {row.job_id!r}"
        )
        if taken.rows:
            return job_row(taken.rows[0])
        if ambiguous:
            now_row = await self._store.get(row.job_id)
            if (
                now_row is not None
                and now_row.claimed_by == me
                and now_row.attempt == row.attempt + 1
            ):
                return now_row
        return None


def _orphan(values: Sequence[Any]) -> Orphan:
    cols = list(values)
    row = job_row(cols[: len(JOB_COLUMNS)])
    return Orphan(row=row, past_deadline=bool(cols[len(JOB_COLUMNS)]))
