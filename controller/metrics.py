"""Prometheus metrics, named like KEDA's: one `audiojob_` prefix, `_total` on counters,
units in names."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from controller import __version__

BUILD_INFO = Gauge("audiojob_build_info", "Build information", ["version"])
BUILD_INFO.labels(version=__version__).set(1)
CLAIMS = Counter("audiojob_claims_total", "Rows claimed from the job table")
REJECTED = Counter("audiojob_rejected_total", "Claimed rows failed at once for bad type/payload")
OUTCOMES = Counter("audiojob_outcomes_total", "Outcomes recorded in the job table", ["outcome"])
QUEUE = Gauge("audiojob_queue_rows", "Rows by state, as last counted", ["state"])
RUNNING = Gauge("audiojob_running_jobs", "Attempts this controller is watching")
CLAIM_TO_JOB = Histogram(
    "audiojob_claim_to_job_seconds",
    "From claiming a row to its Job created",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CANCEL_LATENCY = Histogram(
    "audiojob_cancel_seconds",
    "From noticing a cancelled row to its pod confirmed gone",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120),
)
DB_ERRORS = Counter("audiojob_db_errors_total", "Database calls that failed after retries")
API_ERRORS = Counter("audiojob_api_errors_total", "Kubernetes API calls that failed")
CYCLES = Counter("audiojob_cycles_total", "Engine cycles run")
API_REQUESTS = Counter(
    "audiojob_api_requests_total",
    "Kubernetes API requests the controller sent (one per watch request, verb watch)",
    ["verb"],
)

# -- the watches and the engine's liveness (controller.watch, controller.health)
WATCH_UP = Gauge(
    "audiojob_watch_up",
    "1 while the watch on this kind is streaming, 0 while it is resuming, relisting or stopped",
    ["kind"],
)
WATCH_RESTARTS = Counter(
    "audiojob_watch_restarts_total",
    "Watch requests sent again after the server ended one or the connection failed",
    ["kind"],
)
WATCH_RELISTS = Counter(
    "audiojob_watch_relists_total",
    "Relists a watch asked for because its resourceVersion expired (410) or was ahead (504)",
    ["kind"],
)
LAST_CYCLE = Gauge(
    "audiojob_last_cycle_timestamp_seconds",
    "Unix time when the engine last completed a cycle",
)
