"""Queue-metrics: a tiny HTTP service that tells KEDA how much work the job table holds.

`python -m controller.queue_metrics` serves, on AUDIOJOB_QUEUE_METRICS_PORT (default 8081):

- `GET /queue`: `{"pending": N, "inflight": M, "total": N + M}` for KEDA's metrics-api scaler,
  which reads `total` so the controller stays up while rows are pending *or* in flight;
- `GET /metrics`: Prometheus gauges `audiojob_queue_pending`, `audiojob_queue_inflight` and
  `audiojob_rows{status,type}` (live rows, each status counted up to `ROWS_CAP`), and the
  database call metrics (`audiojob_db_*`, controller.metrics) of its own queries;
- `GET /healthz`: 200 while the process serves (it does not touch the database).

Counts come from `JobStore.counts()`, which reads at most about twice
`AUDIOJOB_METRICS__QUEUE_COUNT_CAP` index entries whatever the backlog (each figure stops at the
cap: at the cap it means "at least this many"), and are cached for `CACHE_SECONDS`, so a scaler
polling every few seconds costs at most one query per window. The rows each count read, as the
database reports them, are in `audiojob_db_rows_read_total{kind="count"}` on `/metrics`. A
database error answers 503 with a JSON `error` sentence on `/queue`; KEDA then counts a failure
and applies its `fallback`. `/metrics` still answers, with `audiojob_db_up 0` and no queue gauges.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from controller import metrics as m
from controller.settings import DEFAULT_COUNT_CAP, DbSettings, load_settings
from controller.store import JobStore, QueueCounts, RetryPolicy, StoreError
from controller.store.census import DEFAULT_CAP, LIVE, Census
from runner.payloads import JOB_TYPES

log = logging.getLogger("audiojob.queue_metrics")

DEFAULT_PORT = 8081
CACHE_SECONDS = 2.0
"""How long one count answers for, in seconds; KEDA polls every 30 s by default."""

ROWS_CAP = DEFAULT_CAP
"""Each status of `audiojob_rows` is counted up to this many rows: a gauge at the cap means
"at least"; the count reads at most this many rows per status (Turso bills rows read)."""
ROWS_CACHE_SECONDS = 30.0
"""One census answers for this long: several Prometheus replicas, or a short scrape interval,
cost no more reads than one scrape every 30 s."""

# A short budget: KEDA's request times out, and a stale answer is worse than a 503.
QUERY_RETRY = RetryPolicy(attempts=2, base_seconds=0.1, cap_seconds=0.5)


@dataclass(frozen=True, slots=True)
class _Cached:
    counts: QueueCounts
    at: float


class QueueCounter:
    """Opens the store on first use (and again after a failed open), caches counts briefly."""

    def __init__(
        self,
        db: DbSettings,
        *,
        cache_seconds: float = CACHE_SECONDS,
        cap: int = DEFAULT_COUNT_CAP,
    ) -> None:
        self._db = db
        self._cap = cap
        self._cache_seconds = cache_seconds
        self._store: JobStore | None = None
        self._cached: _Cached | None = None
        self._rows: tuple[dict[tuple[str, str], int], float] | None = None
        self._lock = asyncio.Lock()

    async def counts(self) -> QueueCounts:
        """Fresh-enough counts, or StoreError with a sentence saying what failed."""
        async with self._lock:
            now = time.monotonic()
            if self._cached and now - self._cached.at < self._cache_seconds:
                return self._cached.counts
            if self._store is None:
                self._store = await JobStore.open(self._db, retry=QUERY_RETRY)
            counts = await self._store.counts(cap=self._cap)
            self._cached = _Cached(counts, time.monotonic())
            return counts

    async def rows(self) -> dict[tuple[str, str], int]:
        """Live rows by (status, type), cached for `ROWS_CACHE_SECONDS`."""
        async with self._lock:
            now = time.monotonic()
            if self._rows is not None and now - self._rows[1] < ROWS_CACHE_SECONDS:
                return self._rows[0]
            if self._store is None:
                self._store = await JobStore.open(self._db, retry=QUERY_RETRY)
            rows = await Census(self._store, self._db.table).live(ROWS_CAP)
            self._rows = (rows, time.monotonic())
            return rows

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None


COUNTER_KEY = web.AppKey("counter", QueueCounter)
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
DB_REGISTRY_KEY = web.AppKey("db_registry", CollectorRegistry)
PENDING_KEY = web.AppKey("pending", Gauge)
INFLIGHT_KEY = web.AppKey("inflight", Gauge)
ROWS_KEY = web.AppKey("rows", Gauge)


def _error(e: StoreError) -> web.Response:
    return web.json_response(
        {"error": f"cannot count the job queue: {e}"},
        status=503,
    )


async def queue(request: web.Request) -> web.Response:
    try:
        c = await request.app[COUNTER_KEY].counts()
    except StoreError as e:
        log.warning("queue count failed: %s", e)
        return _error(e)
    return web.json_response(
        {"pending": c.pending, "inflight": c.inflight, "total": c.pending + c.inflight}
    )


async def metrics(request: web.Request) -> web.Response:
    try:
        c = await request.app[COUNTER_KEY].counts()
        rows = await request.app[COUNTER_KEY].rows()
    except StoreError as e:
        # Still 200: the database metrics say it is away (audiojob_db_up 0), which is what an
        # alert wants to see; the queue gauges are left out rather than shown stale. Set here
        # too: a store that could not even be opened made no call that would have set it.
        log.warning("queue count failed: %s", e)
        m.DB_UP.set(0)
        return _exposition(request.app[DB_REGISTRY_KEY])
    for status in LIVE:
        for job_type in (*JOB_TYPES, "other"):
            request.app[ROWS_KEY].labels(status=status, type=job_type).set(
                rows.get((status, job_type), 0)
            )
    request.app[PENDING_KEY].set(c.pending)
    request.app[INFLIGHT_KEY].set(c.inflight)
    return _exposition(request.app[REGISTRY_KEY], request.app[DB_REGISTRY_KEY])


def _exposition(*registries: CollectorRegistry) -> web.Response:
    body = b"".join(generate_latest(r) for r in registries)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_app(counter: QueueCounter) -> web.Application:
    """The aiohttp application; the counter is closed with the app."""
    app = web.Application()
    registry = CollectorRegistry()
    app[COUNTER_KEY] = counter
    app[REGISTRY_KEY] = registry
    # What the counts cost, as the database billed them (the process-wide counters).
    registry.register(m.DB_ROWS_READ)
    registry.register(m.DB_ROWS_WRITTEN)
    app[PENDING_KEY] = Gauge(
        "audiojob_queue_pending",
        "Rows waiting to be claimed, counted up to the cap (at the cap: at least that many).",
        registry=registry,
    )
    app[INFLIGHT_KEY] = Gauge(
        "audiojob_queue_inflight",
        "Rows claimed and not finished (processing, or cancelled with a pod not yet gone),"
        " counted up to the cap.",
        registry=registry,
    )
    app[ROWS_KEY] = Gauge(
        "audiojob_rows",
        f"Live rows by status and type, each status counted up to {ROWS_CAP}",
        ["status", "type"],
        registry=registry,
    )
    # Its own database calls, so a database outage shows while the controller is scaled to 0.
    app[DB_REGISTRY_KEY] = db_registry = CollectorRegistry()
    for collector in (m.DB_DURATION, m.DB_ERRORS, m.DB_UP):
        db_registry.register(collector)
    app.router.add_get("/queue", queue)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)

    async def close_counter(app: web.Application) -> None:
        await app[COUNTER_KEY].close()

    app.on_cleanup.append(close_counter)
    return app


def main() -> None:
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    port = int(os.environ.get("AUDIOJOB_QUEUE_METRICS_PORT", str(DEFAULT_PORT)))
    web.run_app(
        build_app(QueueCounter(settings.db, cap=settings.metrics.queue_count_cap)),
        host=settings.metrics.host,
        port=port,
        print=None,
    )


if __name__ == "__main__":
    main()
