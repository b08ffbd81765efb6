"""Rows read as the database reports them (what hosted Turso bills) stay bounded by each
statement's batch, not by the table: 50,000 pending and 150,000 finished rows beside it.

On `file:` the figures come from SQLite's statement counters through the file backend, over
the wire from the test server's `rows_read` (the same counters, as sqld reports its own).
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import pytest
from prometheus_client import REGISTRY

from controller.settings import DbSettings
from controller.store import Beat, JobStore
from controller.store.batches import Batches, Ended, Started
from controller.store.outcome_writes import Completion, Failure, Requeue
from controller.store.ownership import Ownership
from controller.store.retention import Retention
from devcluster.hrana_server import HranaServer

from .conftest import write_rows

T = TypeVar("T")
T0 = 1_700_000_000_000
LEASE = 60_000
DEADLINES = {"ingest": 700_000, "preview": 400_000, "save": 1_000_000}
LONGEST = max(DEADLINES.values())
PENDING = 50_000
FINISHED = 150_000
BATCH = 10
INGEST = '{"url": "https://example.com/a"}'


def bound(rows: int) -> int:
    """Rows a statement about `rows` rows may read: a few index entries and the row itself per
    row, plus the seeks that start its scans. Far below the 200,000 rows of the table."""
    return 4 * rows + 40


def db_path(db: DbSettings, tmp_path: Path) -> Path:
    return tmp_path / ("local.db" if db.url.startswith("file:") else "served.db")


def fill(path: Path) -> None:
    """The backlog and the history."""
    finished = ("complete", "failed", "cancelled")
    pending = (
        "INSERT INTO audio_jobs (job_id, type, status, payload, created_at, updated_at)"
        " VALUES (?, 'ingest', 'pending', ?, ?, ?)"
    )
    history = (
        "INSERT INTO audio_jobs (job_id, type, status, payload, attempt, created_at,"
        " updated_at, started_at, finished_at) VALUES (?, 'ingest', ?, ?, 1, ?, ?, ?, ?)"
    )
    write_rows(
        path,
        [
            (pending, ((f"p{i}", INGEST, T0 + i, T0 + i) for i in range(PENDING))),
            (
                history,
                (
                    (f"f{i}", finished[i % 3], INGEST, T0 - 10**9 + i, T0, T0 - 10**8, T0 - 10**7)
                    for i in range(FINISHED)
                ),
            ),
        ],
    )


async def read_by(store: JobStore, kind: str, call: Awaitable[T]) -> tuple[int, T]:
    """Rows the database reported reading for `kind` while `call` ran, and its answer."""
    before = store.rows_read.get(kind, 0)
    answer = await call
    return store.rows_read.get(kind, 0) - before, answer


@pytest.fixture
async def big(db: DbSettings, tmp_path: Path) -> JobStore:
    store = await JobStore.open(db)
    fill(db_path(db, tmp_path))
    return store


async def test_each_statement_reads_rows_bounded_by_its_batch(big: JobStore) -> None:
    store = big
    try:
        # The measure sees scans: an uncapped count reads the whole backlog.
        uncapped = "SELECT COUNT(*) FROM audio_jobs WHERE status = 'pending'"
        read, _ = await read_by(store, "other", store._run(uncapped, [], "uncapped count"))
        assert read >= PENDING

        claimed = await store.claim(worker_id="me", limit=BATCH, now_ms=T0 + 10**6)
        assert len(claimed.jobs) == BATCH
        assert 0 < store.rows_read["claim"] <= bound(BATCH)
        jobs = [(j.row.job_id, j.row.attempt) for j in claimed.jobs]

        beats = [Beat(job_id, attempt, "rendering", 50) for job_id, attempt in jobs]
        read, gone = await read_by(store, "heartbeat", store.heartbeat(beats))
        assert read <= bound(BATCH) and not gone

        done = [Completion(job_id, attempt, {"ok": True}) for job_id, attempt in jobs[:4]]
        failed = [Failure(job_id, attempt, "bad", "permanent") for job_id, attempt in jobs[4:7]]
        again = [Requeue(job_id, attempt, "flaky") for job_id, attempt in jobs[7:]]
        for items, write in ((done, store.complete_many), (failed, store.fail_many)):
            read, answers = await read_by(store, "outcome", write(items))
            assert read <= bound(len(items)) and set(answers.values()) == {"applied"}
        read, requeued = await read_by(store, "outcome", store.retry_many(again))
        assert read <= bound(len(again)) and set(requeued.values()) == {"requeued"}

        for cap in (BATCH, 1_000):
            counted, counts = await read_by(store, "count", store.counts(cap=cap))
            assert 0 < counted <= bound(cap)
            assert (counts.pending, counts.inflight) == (cap, 0)
    finally:
        await store.close()


async def test_the_takeover_check_reads_rows_bounded_by_open_rows(big: JobStore) -> None:
    store = big
    own = Ownership(store)
    try:
        await store.claim(worker_id="dead", limit=BATCH, deadlines_ms=DEADLINES, now_ms=T0)
        await own.beat("dead", "0.1.0", BATCH, longest_ms=LONGEST, start=True, now=T0)
        await own.beat("me", "0.1.0", 0, longest_ms=LONGEST, start=True, now=T0)
        kw = {"me": "me", "lease_ms": LEASE, "longest_ms": LONGEST, "limit": BATCH}

        # Every installation alive: the gated check reads the workers table only.
        await own.beat("dead", "0.1.0", BATCH, longest_ms=LONGEST, now=T0 + LEASE)
        quiet, none = await read_by(store, "takeover_check", own.dead_rows(**kw, now=T0 + LEASE))
        assert quiet <= 10 and none == []

        # "dead" is stale, inside the window: the gated check reads the open rows, as does the
        # ungated one at any time; both stop at the processing rows, never the history.
        late = T0 + 3 * LEASE
        await own.beat("me", "0.1.0", 0, longest_ms=LONGEST, now=late)
        for gated in (True, False):
            check = own.dead_rows(**kw, gated=gated, now=late)
            read, found = await read_by(store, "takeover_check", check)
            assert read <= bound(BATCH) and len(found) == BATCH
    finally:
        await store.close()


async def test_the_look_for_cancellations_reads_no_row_when_nothing_is_cancelled(
    big: JobStore,
) -> None:
    """engine.cancels looks every 0.5 s while attempts run: that must cost requests, not rows,
    beside running rows, the backlog and 50,000 finished cancelled rows."""
    store = big
    try:
        claimed = await store.claim(worker_id="me", limit=BATCH, now_ms=T0 + 10**6)
        read, rows = await read_by(store, "reconcile", store.cancelled_unfinalized())
        assert read == 0 and rows == []
        assert await store.cancel(claimed.jobs[0].row.job_id, now_ms=T0 + 10**6)
        read, rows = await read_by(store, "reconcile", store.cancelled_unfinalized())
        assert 0 < read <= bound(1) and [r.job_id for r in rows] == [claimed.jobs[0].row.job_id]
    finally:
        await store.close()


async def every_call(store: JobStore) -> None:
    """One of each of the store's calls, on a clock pinned for both backends alike."""
    own, batches, retention = Ownership(store), Batches(store), Retention(store)
    for i in range(6):
        await store.insert(job_id=f"k{i}", type="ingest", payload=INGEST, now_ms=T0 + i)
    await store.cancel("k5", now_ms=T0 + 6)
    (a, b, c, d, e) = (await store.claim(worker_id="me", limit=5, now_ms=T0 + 10)).jobs
    await batches.set_k8s_jobs([(b.row.job_id, 1, "aj-b")])
    await batches.attempts_started([Started(b.row.job_id, 1, "p", "n", T0 + 11)])
    await batches.attempts_ended([Ended(b.row.job_id, 1, 0, None, T0 + 12)])
    await store.heartbeat([Beat(c.row.job_id, 1, "x", 5)], now_ms=T0 + 13)
    await store.complete(a.row.job_id, 1, {}, now_ms=T0 + 14)
    await store.fail(b.row.job_id, 1, error="bad", kind="permanent", now_ms=T0 + 14)
    await store.retry_or_fail(c.row.job_id, 1, error="x", backoff_seconds=0, now_ms=T0 + 14)
    await store.cancel(d.row.job_id, now_ms=T0 + 15)
    await store.finalize_cancelled(d.row.job_id, now_ms=T0 + 16)
    await store.processing(worker_id="me")
    await store.cancelled_unfinalized()
    await store.counts()
    await store.get(a.row.job_id)
    await store.get_many([a.row.job_id, b.row.job_id])
    await store.attempts(a.row.job_id)
    await store.workers()
    await own.beat("other", "0.1.0", 1, longest_ms=LONGEST, start=True, now=T0)
    kw = {"me": "me", "lease_ms": LEASE}
    late = T0 + 10**7
    orphans = await own.dead_rows(**kw, longest_ms=LONGEST, limit=5, gated=False, now=late)
    await own.take_over(e.row, **kw, deadlines_ms=DEADLINES, at_once=True, now=late)
    assert orphans == []  # "me" is taking nothing from itself; the check ran all the same
    await retention.prune(finished_before_ms=T0 + 15, limit=10)


async def test_both_backends_report_the_same_rows_under_a_kind_for_every_call(
    tmp_path: Path, server: HranaServer
) -> None:
    seen = []
    for url in (f"file:{tmp_path / 'local.db'}", server.url()):
        store = await JobStore.open(DbSettings(url=url))
        try:
            metric = REGISTRY.get_sample_value("audiojob_db_rows_read_total", {"kind": "claim"})
            await every_call(store)
            after = REGISTRY.get_sample_value("audiojob_db_rows_read_total", {"kind": "claim"})
            assert (after or 0) - (metric or 0) == store.rows_read["claim"] > 0
            seen.append({k: v for k, v in store.rows_read.items() if k != "migrate"})
            kinds = set(store.rows_read) | set(store.rows_written)
            assert "other" not in kinds, kinds  # every call of the store has its kind
        finally:
            await store.close()
    assert seen[0] == seen[1]
