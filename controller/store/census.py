"""What the queue holds, for people and gauges (queue-metrics' `audiojob_rows`, the status
view), read so that Turso's bill (every row a statement scans) never grows with history:

- live rows (pending, processing, cancelled but not finalized) through their partial indexes,
  each status counted up to `cap`;
- finished rows only among the newest `window` rows by rowid (rows are inserted in order, and
  `max(rowid)` is one index seek), so a table of millions of finished rows costs `window`.
"""

# ruff: noqa: S608  # SQL is assembled only from constants and checked identifiers; values are bound

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from controller.store.models import JOB_COLUMNS, JobRow
from controller.store.params import Stmt
from controller.store.rows import job_row
from controller.store.store import JobStore
from runner.payloads import JOB_TYPES

LIVE = ("pending", "processing", "cancelling")
"""`cancelling`: cancelled while it ran, its pod not yet confirmed gone."""
_WHERE = {
    "pending": "status = 'pending'",
    "processing": "status = 'processing'",
    "cancelling": "status = 'cancelled' AND finished_at IS NULL",
}
_COLS = ", ".join(JOB_COLUMNS)
DEFAULT_CAP = 1_000
"""Per status. Above it a count reads `cap` rows each time (Turso bills rows read), so the
cap is what a backlog can cost; the total comes from the queue count."""
DEFAULT_WINDOW = 2_000


def known_type(job_type: str) -> str:
    """A bounded label: a type the runner knows, else `other` (the app may insert anything)."""
    return job_type if job_type in JOB_TYPES else "other"


@dataclass(frozen=True, slots=True)
class Recent:
    counts: dict[tuple[str, str], int]
    """(status, type) -> rows among the newest `window` rows that finished."""
    failures: list[JobRow]
    """The newest failures among them, latest finish first."""


class Census:
    def __init__(self, store: JobStore, table: str) -> None:
        self._store = store

        def r(sql: str) -> Stmt:
            return Stmt(sql, table)

        # One capped subquery per status: each reads at most `cap` entries of its index, plus
        # the row itself for its type.
        self._live = r(
            " UNION ALL ".join(
                f"SELECT '{s}', type, COUNT(*) FROM (SELECT type FROM audio_jobs"
                f" WHERE {_WHERE[s]} LIMIT :cap) GROUP BY type"
                for s in LIVE
            )
        )
        self._in_flight = r(
            f"SELECT {_COLS} FROM audio_jobs WHERE status = 'processing' LIMIT :limit"
        )
        newest = "rowid > (SELECT max(rowid) FROM audio_jobs) - :window"
        self._recent_counts = r(
            f"SELECT status, type, COUNT(*) FROM audio_jobs WHERE {newest}"
            # `+`: not the retention index, which would walk every finished row there is
            " AND +status IN ('complete', 'failed', 'cancelled') AND +finished_at IS NOT NULL"
            " GROUP BY status, type"
        )
        self._recent_failures = r(
            f"SELECT {_COLS} FROM audio_jobs WHERE {newest} AND status = 'failed'"
            " ORDER BY finished_at DESC LIMIT :limit"
        )

    async def live(self, cap: int = DEFAULT_CAP) -> dict[tuple[str, str], int]:
        """(status, type) -> live rows, each status counted up to `cap`."""
        rs, _ = await self._store._call(self._live, "count live rows by type", cap=cap)
        return _counts(rs.rows)

    async def in_flight(self, limit: int = 50) -> list[JobRow]:
        """Processing rows, oldest claim first."""
        rs, _ = await self._store._call(self._in_flight, "list rows in flight", limit=limit)
        return sorted(map(job_row, rs.rows), key=lambda r: r.started_at or r.updated_at)

    async def recent(self, window: int = DEFAULT_WINDOW, failures: int = 5) -> Recent:
        counts, _ = await self._store._call(self._recent_counts, "count recent rows", window=window)
        failed, _ = await self._store._call(
            self._recent_failures, "list recent failures", window=window, limit=failures
        )
        return Recent(_counts(counts.rows), list(map(job_row, failed.rows)))


def _counts(rows: Sequence[Sequence[Any]]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for status, job_type, n in rows:
        key = (str(status), known_type(str(job_type)))
        out[key] = out.get(key, 0) + int(n)
    return out
