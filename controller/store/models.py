"""Typed rows and call results of the job store (docs/job-table.md, "The schema")."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from runner.payloads import Payload

Status = Literal["pending", "processing", "complete", "failed", "cancelled"]
ErrorKind = Literal["transient", "permanent", "timeout", "lost", "cancelled"]
FailKind = Literal["transient", "permanent", "timeout", "lost"]
FAIL_KINDS: tuple[FailKind, ...] = ("transient", "permanent", "timeout", "lost")

WriteResult = Literal["applied", "stale"]
"""`stale`: the row is no longer at that attempt and status; nothing was changed."""
RetryOutcome = Literal["requeued", "failed", "stale"]


class JobRow(BaseModel):
    """One row of the job table, every column; times are epoch milliseconds (UTC)."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    type: str
    status: Status
    payload: str
    priority: int
    stage: str | None
    progress: int
    attempt: int
    retry_count: int
    max_retries: int
    run_after: int | None
    result: str | None
    error: str | None
    error_kind: ErrorKind | None
    claimed_by: str | None
    k8s_job: str | None
    trace_id: str | None
    created_at: int
    updated_at: int
    started_at: int | None
    finished_at: int | None
    run_deadline: int | None = None
    """While processing (or cancelled and not yet finalized): when this attempt's pod can no
    longer be running, by the database's clock, as its claimer computed it. NULL on rows
    claimed by a controller older than schema version 2."""

    def result_json(self) -> Any:
        """The decoded result, or None before completion."""
        return None if self.result is None else json.loads(self.result)


JOB_COLUMNS: tuple[str, ...] = tuple(JobRow.model_fields)


class AttemptRow(BaseModel):
    """One run of a job: the ledger the app shows as history."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    attempt: int
    pod: str | None
    node: str | None
    started_at: int | None
    ended_at: int | None
    exit_code: int | None
    reason: str | None


class WorkerRow(BaseModel):
    """One installation, as the app's health page reads it."""

    model_config = ConfigDict(frozen=True)

    worker_id: str
    version: str
    started_at: int
    last_seen: int
    active: int
    longest_run_ms: int | None = None
    """The longest run deadline it gives any attempt: how long after its last beat its rows
    can still have running pods (NULL from controllers older than schema version 2)."""


@dataclass(frozen=True, slots=True)
class Beat:
    """What the controller saw of one running job this cycle; None leaves a column unchanged."""

    job_id: str
    attempt: int
    stage: str | None = None
    progress: int | None = None


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    row: JobRow
    payload: Payload


@dataclass(frozen=True, slots=True)
class RejectedJob:
    """A claimed row whose type or payload cannot run.

    The store fails it permanently with `error` in the same call (if the database is away at
    that moment, at its next claim). `row` is the row as claimed, before that write.
    """

    row: JobRow
    error: str


@dataclass(frozen=True, slots=True)
class Claim:
    jobs: list[ClaimedJob]
    """Valid rows now `processing` for this worker, in claim order (priority, then FIFO)."""
    rejected: list[RejectedJob]


@dataclass(frozen=True, slots=True)
class QueueCounts:
    pending: int
    inflight: int
    """`processing` plus `cancelled` rows whose pod is not yet confirmed gone."""
