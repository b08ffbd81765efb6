"""Prometheus metrics, named like KEDA's: one `audiojob_` prefix, `_total` on counters, base
units in names. The table in docs/operations.md ("Metrics") documents every one; the dashboard
and alert rules in the chart use only these names (a Prometheus-backed test checks that they
exist).

Labels stay bounded: job type, outcome, failure kind, watch kind, HTTP verb and status, SQL
verb. Never a job id, a pod name or an error text.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from controller import __version__

P = ParamSpec("P")
T = TypeVar("T")

# Seconds, from a fast loopback call to a slow hosted one past its retries.
_CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Seconds, from a Job created at once to a pod that waited for a node or an image.
_START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Seconds, from a short preview to a long ingest (the longest default timeout is 15 min).
_RUN_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600)

# The `_created` series beside every counter and histogram double what is scraped and no
# rule or panel reads them (Prometheus' own created-timestamp handling does not need them).
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client

BUILD_INFO = Gauge("audiojob_build_info", "Build information, always 1", ["version"])
BUILD_INFO.labels(version=__version__).set(1)

# -- the engine ------------------------------------------------------------------------------
LEADER = Gauge(
    "audiojob_leader", "1 while this controller holds its installation's Lease and acts, else 0"
)
LAST_CYCLE = Gauge(
    "audiojob_last_cycle_timestamp_seconds",
    "Unix time at which the engine last completed a cycle without error",
)
CYCLES = Counter("audiojob_cycles_total", "Engine cycles started")
CYCLE_ERRORS = Counter(
    "audiojob_cycle_errors_total",
    "Engine cycles interrupted, by cause (database, kubernetes, unexpected)",
    ["cause"],
)
RUNNING = Gauge("audiojob_running_jobs", "Attempts this controller is watching")
OWED = Gauge(
    "audiojob_owed_outcomes",
    "Outcomes decided but not yet written to the job table (kept while the database is away)",
)
OLDEST_WAITING = Gauge(
    "audiojob_oldest_waiting_seconds",
    "Age since claim of the oldest running attempt whose pod has not yet started (0: none)",
)
CLAIMS = Counter("audiojob_claims_total", "Rows claimed from the job table (takeovers included)")
REJECTED = Counter("audiojob_rejected_total", "Claimed rows failed at once for bad type/payload")
OUTCOMES = Counter(
    "audiojob_outcomes_total",
    "Outcomes written to the job table: outcome is complete, failed, retried, cancelled or stale"
    " (the row had moved on); kind is the failure kind (transient, permanent, timeout, lost) or"
    " none",
    ["type", "outcome", "kind"],
)
CLAIM_TO_JOB = Histogram(
    "audiojob_claim_to_job_seconds",
    "From claiming a row to its Job created",
    buckets=_START_BUCKETS,
)
CLAIM_TO_RUNNING = Histogram(
    "audiojob_claim_to_running_seconds",
    "From claiming a row to its pod seen past Pending",
    ["type"],
    buckets=_START_BUCKETS,
)
RUN_DURATION = Histogram(
    "audiojob_run_duration_seconds",
    "From an attempt's pod start (else its claim) to its outcome being recorded",
    ["type", "outcome"],
    buckets=_RUN_BUCKETS,
)
CANCEL_LATENCY = Histogram(
    "audiojob_cancel_seconds",
    "From noticing a cancelled row to its pod confirmed gone",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120),
)

# -- watches ---------------------------------------------------------------------------------
WATCH_UP = Gauge(
    "audiojob_watch_up", "1 while the watch on managed objects of this kind streams", ["kind"]
)
WATCH_RESTARTS = Counter(
    "audiojob_watch_restarts_total",
    "Watch streams that failed (connection, HTTP error) and were resumed after a backoff",
    ["kind"],
)
WATCH_RELISTS = Counter(
    "audiojob_watch_relists_total",
    "Relists a watch asked for because its resourceVersion had expired (410 Gone)",
    ["kind"],
)
WATCH_EVENTS = Counter(
    "audiojob_watch_events_total", "Events the watch on managed objects of this kind read", ["kind"]
)
WATCH_BYTES = Counter(
    "audiojob_watch_bytes_total",
    "Bytes of events the watch on managed objects of this kind read (each event is a whole "
    "object: decoding them is a large share of the controller's CPU per job)",
    ["kind"],
)

# -- Kubernetes API --------------------------------------------------------------------------
API_REQUESTS = Counter(
    "audiojob_api_requests_total",
    "Kubernetes API requests the controller sent (one per watch request, verb watch)",
    ["verb"],
)

# -- Database rows as Turso bills them (rows_read/rows_written of every statement's result) ----
# Labelled by statement kind, a short fixed set (controller/store/calls.py `statement_kind`),
# never by job: a label per job would grow without bound.
DB_ROWS_READ = Counter(
    "audiojob_db_rows_read_total",
    "Rows the database reported reading, by statement kind (what hosted Turso bills)",
    ["kind"],
)
DB_ROWS_WRITTEN = Counter(
    "audiojob_db_rows_written_total",
    "Rows the database reported writing, by statement kind",
    ["kind"],
)
API_DURATION = Histogram(
    "audiojob_api_request_duration_seconds",
    "Kubernetes API request latency, answered or failed (watches not included)",
    ["verb"],
    buckets=_CALL_BUCKETS,
)
API_ERRORS = Counter(
    "audiojob_api_request_errors_total",
    "Kubernetes API requests that failed: code is the HTTP status, or none when no answer came"
    " (404 and 409 are often expected: a Job already gone or already there)",
    ["verb", "code"],
)

# -- database --------------------------------------------------------------------------------
DB_DURATION = Histogram(
    "audiojob_db_statement_duration_seconds",
    "Database call latency including retries, by SQL verb (select, update, insert, delete,"
    " batch, ...)",
    ["statement"],
    buckets=_CALL_BUCKETS,
)
DB_ERRORS = Counter(
    "audiojob_db_errors_total",
    "Failed database tries by kind (timeout, connection, locked, busy, blocked, rate_limited,"
    " server, auth, not_found, sql, other); retried tries included",
    ["kind"],
)
DB_UP = Gauge(
    "audiojob_db_up",
    "1 when the last database call succeeded, 0 when it gave up or was refused",
)


def sql_verb(sql: str) -> str:
    """A bounded label for a statement: its first keyword (`what` texts carry job ids)."""
    head = sql.lstrip().split(None, 1)
    return head[0].lower() if head and head[0].isalpha() else "other"


# Each labelled series is looked up once and kept: `labels()` takes the metric's lock and
# builds its key on every call, which was a third of the controller's own CPU per Kubernetes
# request (cProfile of 2,000 Job creates against a local server: timed + labels + observe
# 0.35 ms of 1.2 ms a request; bench/README.md, "Profile"). The label sets are bounded (verbs,
# SQL verbs, statement kinds), so the caches are too.
@functools.cache
def _db_duration(statement: str) -> Any:
    return DB_DURATION.labels(statement=statement)


@functools.cache
def db_rows(kind: str) -> tuple[Any, Any]:
    """The rows-read and rows-written series of a statement kind."""
    return DB_ROWS_READ.labels(kind=kind), DB_ROWS_WRITTEN.labels(kind=kind)


@functools.cache
def _api_series(verb: str) -> tuple[Any, Any]:
    return API_REQUESTS.labels(verb=verb), API_DURATION.labels(verb=verb)


def observe_db(statement: str, started: float, *, ok: bool) -> None:
    """A database call ended: answered (`ok`), or given up or refused."""
    _db_duration(statement).observe(time.monotonic() - started)
    DB_UP.set(1 if ok else 0)


def kube_call(
    call: Callable[P, Awaitable[T]],
) -> Callable[P, Awaitable[T]]:
    """Decorates the one method every Kubernetes request goes through, whose first argument
    after `self` is the sentence naming it ("create Job", "patch Job aj-…"): latency by verb,
    errors by verb and status."""

    @functools.wraps(call)
    async def timed(*args: P.args, **kwargs: P.kwargs) -> T:
        what = args[1] if len(args) > 1 else kwargs.get("what", "")
        verb = str(what).split(" ", 1)[0] or "other"
        requests, duration = _api_series(verb)
        requests.inc()
        started = time.monotonic()
        try:
            return await call(*args, **kwargs)
        except Exception as e:
            API_ERRORS.labels(verb=verb, code=_status(e)).inc()
            raise
        finally:
            duration.observe(time.monotonic() - started)

    return timed


def _status(e: Exception) -> str:
    status: int | None = getattr(e, "status", None)
    return str(status) if status else "none"


def run_ended(
    *, job_type: str, outcome: str, kind: str | None, started_ms: int, now_ms: int
) -> None:
    """An attempt's outcome was written (outcome as in audiojob_outcomes_total)."""
    OUTCOMES.labels(type=job_type, outcome=outcome, kind=kind or "none").inc()
    if outcome != "stale":
        RUN_DURATION.labels(type=job_type, outcome=outcome).observe(
            max(0, now_ms - started_ms) / 1000
        )


def watch_streaming(kind: str) -> None:
    WATCH_UP.labels(kind=kind).set(1)


def watch_ended(kind: str, *, relist: bool) -> None:
    """A watch stream failed: it resumes after a backoff, or after a relist (410 Gone)."""
    WATCH_UP.labels(kind=kind).set(0)
    (WATCH_RELISTS if relist else WATCH_RESTARTS).labels(kind=kind).inc()


# Every labelled series exists from the start, at zero: an alert or a dashboard panel on a
# series that has not happened yet would otherwise see no data at all.
for _cause in ("database", "kubernetes", "unexpected"):
    CYCLE_ERRORS.labels(cause=_cause)
for _kind in ("job", "pod"):
    WATCH_UP.labels(kind=_kind)
    WATCH_RESTARTS.labels(kind=_kind)
    WATCH_RELISTS.labels(kind=_kind)
    WATCH_EVENTS.labels(kind=_kind)
    WATCH_BYTES.labels(kind=_kind)
