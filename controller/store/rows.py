"""What every part of the store shares: the clock, decoding a row, batch sizes, and the check
a claimed row's type and payload get before a Job is made for it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TypeVar

from controller.store.models import JOB_COLUMNS, ClaimedJob, JobRow, RejectedJob
from runner.errors import PayloadError
from runner.payloads import parse_payload
from runner.rules import NetworkRules

T = TypeVar("T")

MAX_BATCH = 500
"""Rows per statement. SQLite's default limit is 32766 bound parameters and libSQL keeps it;
500 rows of up to 5 values each stay far below it (the controller's batches rarely reach it)."""

MAX_ERROR_CHARS = 1_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def resolve_now(given: int | None) -> int:
    """The caller's clock (tests pin it), or the wall clock."""
    return now_ms() if given is None else given


def job_row(values: Sequence[Any]) -> JobRow:
    return JobRow.model_validate(dict(zip(JOB_COLUMNS, values, strict=True)))


def chunks(items: Sequence[T], size: int = MAX_BATCH) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """Keep an error a single readable line: the sentence may quote keys from the payload."""
    flat = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def validate_row(row: JobRow, rules: NetworkRules | None = None) -> ClaimedJob | RejectedJob:
    """Check a claimed row's type and payload with the runner's own rules; never raises,
    whatever the row holds."""
    try:
        return ClaimedJob(row=row, payload=parse_payload(row.type, row.payload, rules=rules))
    except PayloadError as e:
        return RejectedJob(row=row, error=one_line(str(e)))
    except Exception as e:  # a payload model bug must not stop the claim loop
        return RejectedJob(row=row, error=f"payload could not be checked: {type(e).__name__}")
