"""Outcomes of runs (complete, failed, requeued) for many rows in one statement per kind.

The engine records a cycle's outcomes together; one statement per kind keeps the database cost
per job low (Turso bills every statement). Each row is fenced as a single write would be: it is
changed only while it is still `processing` at that attempt, so a row the app cancelled or
another installation took over is left alone, and the answer says so per row. When a statement's
answer was lost, the rows the retry did not change are read back to tell "our earlier try
landed" from "someone else moved it".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from controller.store.core import StoreCore
from controller.store.models import FAIL_KINDS, JobRow, RetryOutcome, WriteResult
from controller.store.params import Stmt
from controller.store.rows import chunks, resolve_now


@dataclass(frozen=True, slots=True)
class Completion:
    job_id: str
    attempt: int
    result: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Failure:
    job_id: str
    attempt: int
    error: str
    kind: str
    """One of FAIL_KINDS."""


@dataclass(frozen=True, slots=True)
class Requeue:
    """A transient failure whose pod is gone: requeued, or failed if its retries are used up."""

    job_id: str
    attempt: int
    error: str
    kind: str = "transient"
    backoff_seconds: float = 0.0

    @property
    def last_error(self) -> str:
        """The row's error when its retries are used up (the statement picks one of the two)."""
        return f"{self.error} (retries used up)"


class _Keyed(Protocol):
    @property
    def job_id(self) -> str: ...
    @property
    def attempt(self) -> int: ...


Item = TypeVar("Item", bound=_Keyed)
R = TypeVar("R", bound=str)


class OutcomeWrites(StoreCore):
    """The run-outcome writes of `JobStore`: one row, or many in one statement per kind."""

    async def complete(
        self, job_id: str, attempt: int, result: dict[str, Any], *, now_ms: int | None = None
    ) -> WriteResult:
        done = await self.complete_many([Completion(job_id, attempt, result)], now_ms=now_ms)
        return done[job_id]

    async def fail(
        self, job_id: str, attempt: int, *, error: str, kind: str, now_ms: int | None = None
    ) -> WriteResult:
        failed = await self.fail_many([Failure(job_id, attempt, error, kind)], now_ms=now_ms)
        return failed[job_id]

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
        item = Requeue(job_id, attempt, error, kind, backoff_seconds)
        return (await self.retry_many([item], now_ms=now_ms))[job_id]

    async def complete_many(
        self, items: Sequence[Completion], *, now_ms: int | None = None
    ) -> dict[str, WriteResult]:
        """`applied` or `stale` for each job id (the last item wins if one is named twice)."""
        return await self._write(
            items,
            "complete",
            self._sql.complete,
            lambda c: (json.dumps(c.result),),
            now=resolve_now(now_ms),
            answer=lambda status: "applied",
            landed=_completed,
            stale="stale",
        )

    async def fail_many(
        self, items: Sequence[Failure], *, now_ms: int | None = None
    ) -> dict[str, WriteResult]:
        _check_kinds(items)
        return await self._write(
            items,
            "fail",
            self._sql.fail,
            lambda f: (f.error, f.kind),
            now=resolve_now(now_ms),
            answer=lambda status: "applied",
            landed=_failed,
            stale="stale",
        )

    async def retry_many(
        self, items: Sequence[Requeue], *, now_ms: int | None = None
    ) -> dict[str, RetryOutcome]:
        """`requeued`, `failed` (retries used up) or `stale` for each job id."""
        _check_kinds(items)
        now = resolve_now(now_ms)
        return await self._write(
            items,
            "requeue",
            self._sql.retry_or_fail,
            lambda r: (r.error, r.last_error, r.kind, now + round(r.backoff_seconds * 1000)),
            now=now,
            answer=_settled,
            landed=_requeued,
            stale="stale",
        )

    async def _write(
        self,
        items: Sequence[Item],
        verb: str,
        stmt: Callable[[int], Stmt],
        values: Callable[[Item], tuple[Any, ...]],
        *,
        now: int,
        answer: Callable[[str], R],
        landed: Callable[[JobRow, Item], R | None],
        stale: R,
    ) -> dict[str, R]:
        """Run the kind's statement per chunk; `answer` reads a changed row's new status,
        `landed` tells from a row read back whether a lost earlier try wrote it."""
        unique = list({i.job_id: i for i in items}.values())
        out: dict[str, R] = {}
        for chunk in chunks(unique):
            cells: list[Any] = []
            for i in chunk:
                cells += [i.job_id, i.attempt, *values(i)]
            what = (
                f"{verb} job {chunk[0].job_id!r} attempt {chunk[0].attempt}"
                if len(chunk) == 1
                else f"{verb} {len(chunk)} jobs"
            )
            rs, ambiguous = await self._call(stmt(len(chunk)), what, cells, now=now)
            for job_id, status in rs.rows:
                out[str(job_id)] = answer(str(status))
            unchanged = [i for i in chunk if i.job_id not in out]
            rows = await self.get_many([i.job_id for i in unchanged]) if ambiguous else {}
            for i in unchanged:
                row = rows.get(i.job_id)
                landed_as = landed(row, i) if row is not None and row.attempt == i.attempt else None
                out[i.job_id] = stale if landed_as is None else landed_as
        return out


def _check_kinds(items: Sequence[Failure] | Sequence[Requeue]) -> None:
    for i in items:
        if i.kind not in FAIL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAIL_KINDS)}, got {i.kind!r}")


# What a row read back after a lost answer must hold for the write to count as ours.


def _completed(row: JobRow, c: Completion) -> WriteResult | None:
    return "applied" if row.status == "complete" and row.result == json.dumps(c.result) else None


def _failed(row: JobRow, f: Failure) -> WriteResult | None:
    return (
        "applied"
        if (row.status, row.error, row.error_kind) == ("failed", f.error, f.kind)
        else None
    )


def _settled(status: str) -> RetryOutcome:
    return "requeued" if status == "pending" else "failed"


def _requeued(row: JobRow, r: Requeue) -> RetryOutcome | None:
    ours = row.error_kind == r.kind and row.error in (r.error, r.last_error)
    return _settled(row.status) if ours and row.status in ("pending", "failed") else None
