"""The job store: rows of the libSQL job table, their transitions, and the schema."""

from controller.store.calls import RetryPolicy
from controller.store.errors import StoreError, StoreUnavailable
from controller.store.models import (
    AttemptRow,
    Beat,
    Claim,
    ClaimedJob,
    JobRow,
    QueueCounts,
    RejectedJob,
    RetryOutcome,
    WorkerRow,
    WriteResult,
)
from controller.store.schema import SCHEMA_VERSION, schema_sql
from controller.store.store import JobStore, now_ms

__all__ = [
    "SCHEMA_VERSION",
    "AttemptRow",
    "Beat",
    "Claim",
    "ClaimedJob",
    "JobRow",
    "JobStore",
    "QueueCounts",
    "RejectedJob",
    "RetryOutcome",
    "RetryPolicy",
    "StoreError",
    "StoreUnavailable",
    "WorkerRow",
    "WriteResult",
    "now_ms",
    "schema_sql",
]
