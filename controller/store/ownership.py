"""Installations sharing one job table: their liveness, and taking over a dead one's rows.

An installation's row in the workers table (`worker_id` = the installation id) is its lease on
the rows it claimed (`claimed_by` = the same id). `last_seen` is written AND compared with the
database's own clock, so no controller's clock takes part in judging whether an owner is alive.
A takeover is ONE conditional UPDATE that re-checks everything (owner still dead, attempt
unchanged, still processing, run deadline passed), so of two takers exactly one wins, and it
bumps `attempt`, so anything the old owner might still write about its attempt is stale.
"""

# ruff: noqa: S608  # SQL is assembled only from constants and checked identifiers; values are bound

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.store.models import JOB_COLUMNS, JobRow
from controller.store.rows import job_row, resolve_now
from controller.store.schema import rename
from controller.store.store import JobStore

DB_NOW = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
"""The database's clock in epoch ms (the schema's own default for `created_at`)."""

_COLS = ", ".join(JOB_COLUMNS)
_QCOLS = ", ".join(f"j.{c}" for c in JOB_COLUMNS)
# Parameters shared by the row statements: ?1 this installation, ?2 the lease in ms, ?3 the
# clock (NULL in production: the database's; a fixed value in tests), ?4/?5/?6 the run
# deadline in ms for ingest/preview/save.
_NOW = f"COALESCE(?3, {DB_NOW})"
_DEAD = (
    "NOT EXISTS (SELECT 1 FROM audio_job_workers w WHERE w.worker_id = j.claimed_by"
    f" AND w.last_seen >= {_NOW} - ?2)"
)
_DEADLINE = (
    "COALESCE(j.started_at, j.updated_at) + CASE j.type WHEN 'preview' THEN ?5"
    f" WHEN 'save' THEN ?6 ELSE ?4 END <= {_NOW}"
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

        def r(sql: str) -> str:
            return rename(sql, table)

        now5 = f"COALESCE(?5, {DB_NOW})"
        self._beat = r(
            "INSERT INTO audio_job_workers (worker_id, version, started_at, last_seen, active)"
            f" VALUES (?1, ?2, {now5}, {now5}, ?3) ON CONFLICT (worker_id) DO UPDATE SET"
            " version = excluded.version, last_seen = excluded.last_seen,"
            " active = excluded.active,"
            " started_at = CASE WHEN ?4 THEN excluded.started_at ELSE started_at END"
        )
        # One statement per check, also when nothing is eligible: every cancelled row still
        # open, then up to ?7 (the free capacity) processing rows. The gate leads the join:
        # it opens only while some other installation's worker row is stale but younger than
        # ?9, the window in which its rows become eligible (see `dead_rows`). Otherwise, the
        # common case, the check reads the workers table and no job row at all. ?8 = 1 opens
        # it regardless (engine: at each reconcile).
        gate = (
            "WITH gate AS (SELECT 1 WHERE ?8 OR EXISTS (SELECT 1 FROM audio_job_workers g"
            f" WHERE g.worker_id IS NOT ?1 AND g.last_seen < {_NOW} - ?2"
            f" AND g.last_seen >= {_NOW} - ?9))"
        )
        rows = f"SELECT {_QCOLS}, {_DEADLINE} FROM gate CROSS JOIN audio_jobs j WHERE"
        theirs = f"j.claimed_by IS NOT ?1 AND {_DEAD}"
        self._dead_rows = r(
            f"{gate} SELECT * FROM ({rows} j.status = 'cancelled' AND j.finished_at IS NULL"
            f" AND {theirs}) UNION ALL SELECT * FROM ({rows} j.status = 'processing'"
            f" AND {theirs} ORDER BY j.updated_at LIMIT ?7)"
        )
        # ?7 the new attempt's start (this controller's clock, like a claim), ?8 job id,
        # ?9 the attempt seen, ?10 its owner, ?11 = 1 when the taker saw the old Job finished
        # in its own view (then the deadline need not pass).
        self._take_over = r(
            "UPDATE audio_jobs AS j SET attempt = j.attempt + 1, claimed_by = ?1,"
            " started_at = ?7, updated_at = ?7, stage = NULL, progress = 0, k8s_job = NULL"
            " WHERE j.job_id = ?8 AND j.attempt = ?9 AND j.status = 'processing'"
            f" AND j.claimed_by IS ?10 AND {_DEAD} AND (?11 OR {_DEADLINE})"
            f" RETURNING {_COLS}"
        )

    async def beat(
        self,
        installation: str,
        version: str,
        active: int,
        *,
        start: bool = False,
        now: int | None = None,
    ) -> None:
        """Renew this installation's lease; `start` also stamps `started_at`."""
        await self._store._run(
            self._beat, [installation, version, active, int(start), now], "installation heartbeat"
        )

    async def dead_rows(
        self,
        *,
        me: str,
        lease_ms: int,
        deadlines_ms: Mapping[str, int],
        limit: int,
        gated: bool = True,
        now: int | None = None,
    ) -> list[Orphan]:
        """Rows of installations whose lease ran out: every cancelled row still waiting for its
        pod to be confirmed gone, then up to `limit` processing rows, oldest heartbeat first.

        The gated check looks only while an installation's worker row is between `lease_ms`
        and `2 * (lease_ms + the longest run deadline)` old: each of its rows becomes eligible
        in that window (an owner claims only within a worker heartbeat of its last beat, at
        most half the lease, and a row is past its deadline that deadline after its claim).
        `gated=False` looks regardless: for rows left over after the window (the takers were
        full) and rows whose owner never had a worker row.
        """
        window = 2 * (lease_ms + max(deadlines_ms.values()))
        args = [
            *_common(me, lease_ms, now, deadlines_ms),
            max(limit, 0),
            int(not gated),
            window,
        ]
        rs, _ = await self._store._run(self._dead_rows, args, "list rows of dead installations")
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
        """Claim a dead installation's row as a new attempt; None if anything changed since
        (owner back, row moved on, another taker won, deadline not yet passed)."""
        args = [
            *_common(me, lease_ms, now, deadlines_ms),
            resolve_now(now),
            row.job_id,
            row.attempt,
            row.claimed_by,
            int(at_once),
        ]
        # Not retried blind: a lost answer is resolved by reading the row back.
        rs, ambiguous = await self._store._run(self._take_over, args, f"take over {row.job_id!r}")
        if rs.rows:
            return job_row(rs.rows[0])
        if ambiguous:
            now_row = await self._store.get(row.job_id)
            if (
                now_row is not None
                and now_row.claimed_by == me
                and now_row.attempt == row.attempt + 1
            ):
                return now_row
        return None


def _common(me: str, lease_ms: int, now: int | None, deadlines_ms: Mapping[str, int]) -> list[Any]:
    ingest = deadlines_ms["ingest"]
    preview = deadlines_ms.get("preview", ingest)
    return [me, lease_ms, now, ingest, preview, deadlines_ms.get("save", ingest)]


def _orphan(values: Sequence[Any]) -> Orphan:
    cols = list(values)
    row = job_row(cols[: len(JOB_COLUMNS)])
    return Orphan(row=row, past_deadline=bool(cols[len(JOB_COLUMNS)]))
