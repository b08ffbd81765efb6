"""Every transition of a row's state machine (docs/job-table.md), on file: and over both
wire protocols."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from controller.settings import DbSettings
from controller.store import SCHEMA_VERSION, Beat, JobRow, JobStore, StoreError, schema_sql
from controller.store.batches import Batches, Ended, Started
from controller.store.ownership import Ownership
from devcluster.hrana_server import HranaServer
from runner.payloads import IngestPayload, SavePayload

from .conftest import FAST_RETRY

T0 = 1_700_000_000_000
INGEST = {"url": "https://example.com/a"}
SAVE = {"input": "a.wav", "edits": [{"op": "gain", "db": -3}]}


async def claim_one(store: JobStore, job_id: str, *, now: int = T0 + 10) -> JobRow:
    claim = await store.claim(worker_id="w1", limit=1, now_ms=now)
    assert [j.row.job_id for j in claim.jobs] == [job_id]
    return claim.jobs[0].row


async def test_insert_and_get(store: JobStore) -> None:
    await store.insert(job_id="a/1 ü", type="ingest", payload=INGEST, trace_id="t1", now_ms=T0)
    row = await store.get("a/1 ü")
    assert row is not None
    assert (row.status, row.attempt, row.retry_count, row.max_retries) == ("pending", 0, 0, 1)
    assert (row.created_at, row.updated_at, row.trace_id) == (T0, T0, "t1")
    assert row.payload == '{"url": "https://example.com/a"}'
    assert await store.get("missing") is None


async def test_duplicate_insert_is_a_clear_error(store: JobStore) -> None:
    await store.insert(job_id="dup", type="ingest", payload=INGEST)
    with pytest.raises(StoreError, match="job 'dup': a job with that id already exists"):
        await store.insert(job_id="dup", type="save", payload=SAVE)
    row = await store.get("dup")
    assert row is not None and row.type == "ingest"


async def test_claim_takes_priority_then_fifo_and_fills_claim_columns(store: JobStore) -> None:
    for i, prio in enumerate([0, 5, 0, 5, 1]):
        await store.insert(
            job_id=f"j{i}", type="ingest", payload=INGEST, priority=prio, now_ms=T0 + i
        )
    await store.insert(
        job_id="traced", type="ingest", payload=INGEST, trace_id="keep", now_ms=T0 + 9
    )
    claim = await store.claim(worker_id="w1", limit=4, now_ms=T0 + 100)
    assert [j.row.job_id for j in claim.jobs] == ["j1", "j3", "j4", "j0"]
    assert claim.rejected == []
    for job in claim.jobs:
        r = job.row
        assert (r.status, r.attempt, r.claimed_by, r.started_at, r.updated_at) == (
            "processing",
            1,
            "w1",
            T0 + 100,
            T0 + 100,
        )
        assert r.trace_id is not None and len(r.trace_id) == 32
        assert isinstance(job.payload, IngestPayload)
    rest = await store.claim(worker_id="w2", limit=10, now_ms=T0 + 101)
    assert [j.row.job_id for j in rest.jobs] == ["j2", "traced"]
    assert rest.jobs[1].row.trace_id == "keep"
    assert (await store.claim(worker_id="w2", limit=10)).jobs == []


async def test_claim_honours_run_after_and_limit(store: JobStore) -> None:
    await store.insert(job_id="later", type="ingest", payload=INGEST, run_after=T0 + 50, now_ms=T0)
    await store.insert(job_id="now", type="ingest", payload=INGEST, now_ms=T0 + 1)
    assert [j.row.job_id for j in (await store.claim(worker_id="w", limit=0)).jobs] == []
    assert [
        j.row.job_id for j in (await store.claim(worker_id="w", limit=5, now_ms=T0 + 49)).jobs
    ] == ["now"]
    assert [
        j.row.job_id for j in (await store.claim(worker_id="w", limit=5, now_ms=T0 + 50)).jobs
    ] == ["later"]


async def test_invalid_rows_fail_permanently_with_a_sentence(store: JobStore) -> None:
    await store.insert(job_id="bad-json", type="ingest", payload='{"url": ', now_ms=T0)
    await store.insert(job_id="bad-type", type="transcode", payload="{}", now_ms=T0 + 1)
    await store.insert(job_id="bad-field", type="save", payload={"input": ""}, now_ms=T0 + 2)
    await store.insert(job_id="good", type="save", payload=SAVE, now_ms=T0 + 3)
    claim = await store.claim(worker_id="w", limit=10, now_ms=T0 + 10)
    assert [j.row.job_id for j in claim.jobs] == ["good"]
    assert isinstance(claim.jobs[0].payload, SavePayload)
    errors = {r.row.job_id: r.error for r in claim.rejected}
    assert errors["bad-json"].startswith("payload is not valid JSON at line 1 column 9")
    assert (
        errors["bad-type"] == "unknown job type 'transcode': expected one of ingest, preview, save"
    )
    assert errors["bad-field"].startswith("invalid save payload: input:")
    for job_id, error in errors.items():
        row = await store.get(job_id)
        assert row is not None
        assert (row.status, row.error_kind, row.error, row.finished_at) == (
            "failed",
            "permanent",
            error,
            T0 + 10,
        )
    assert (await store.counts()).inflight == 1


async def test_heartbeat_writes_all_rows_and_reports_the_gone_ones(store: JobStore) -> None:
    for i in range(4):
        await store.insert(job_id=f"h{i}", type="ingest", payload=INGEST, now_ms=T0 + i)
    await store.claim(worker_id="w", limit=4, now_ms=T0 + 10)
    assert await store.cancel("h1", now_ms=T0 + 11)
    assert await store.complete("h2", 1, {"ok": True}, now_ms=T0 + 12) == "applied"
    gone = await store.heartbeat(
        [
            Beat("h0", 1, stage="download", progress=40),
            Beat("h1", 1, stage="download", progress=50),
            Beat("h2", 1, stage="x", progress=1),
            Beat("h3", 7, stage="stale attempt", progress=99),
            Beat("nope", 1),
        ],
        now_ms=T0 + 20,
    )
    assert gone == {"h1", "h2", "h3", "nope"}
    h0 = await store.get("h0")
    assert h0 is not None and (h0.stage, h0.progress, h0.updated_at) == ("download", 40, T0 + 20)
    h3 = await store.get("h3")
    assert h3 is not None and (h3.stage, h3.progress, h3.updated_at) == (None, 0, T0 + 10)
    h1 = await store.get("h1")
    assert h1 is not None and h1.stage is None and h1.progress == 0
    # None leaves stage/progress as they were; out-of-range progress is clamped.
    assert await store.heartbeat([Beat("h0", 1)], now_ms=T0 + 30) == set()
    assert await store.heartbeat([Beat("h0", 1, progress=250)], now_ms=T0 + 31) == set()
    h0 = await store.get("h0")
    assert h0 is not None and (h0.stage, h0.progress, h0.updated_at) == ("download", 100, T0 + 31)
    assert await store.heartbeat([]) == set()


async def k8s_job(store: JobStore, job_id: str) -> str | None:
    row = await store.get(job_id)
    assert row is not None
    return row.k8s_job


async def test_set_k8s_jobs_complete_and_their_fences(store: JobStore) -> None:
    await store.insert(job_id="c", type="ingest", payload=INGEST, now_ms=T0)
    await claim_one(store, "c")
    await Batches(store).set_k8s_jobs([("c", 2, "aj-c-x-2")])
    assert await k8s_job(store, "c") is None
    await Batches(store).set_k8s_jobs([("c", 1, "aj-c-x-1")])
    assert await k8s_job(store, "c") == "aj-c-x-1"
    assert await store.complete("c", 0, {"n": 1}) == "stale"
    assert await store.complete("c", 1, {"n": 1}, now_ms=T0 + 99) == "applied"
    assert await store.complete("c", 1, {"n": 2}) == "stale"
    row = await store.get("c")
    assert row is not None
    assert (row.status, row.progress, row.finished_at, row.k8s_job) == (
        "complete",
        100,
        T0 + 99,
        "aj-c-x-1",
    )
    assert row.result_json() == {"n": 1}
    await Batches(store).set_k8s_jobs([("c", 1, "other")])
    assert await k8s_job(store, "c") == "aj-c-x-1"


@pytest.mark.parametrize("kind", ["transient", "permanent", "timeout", "lost"])
async def test_fail(store: JobStore, kind: str) -> None:
    await store.insert(job_id="f", type="ingest", payload=INGEST, now_ms=T0)
    await claim_one(store, "f")
    assert await store.fail("f", 2, error="nope", kind=kind) == "stale"
    assert await store.fail("f", 1, error="yt-dlp: HTTP 403", kind=kind, now_ms=T0 + 5) == "applied"
    row = await store.get("f")
    assert row is not None
    assert (row.status, row.error, row.error_kind, row.finished_at) == (
        "failed",
        "yt-dlp: HTTP 403",
        kind,
        T0 + 5,
    )
    assert await store.fail("f", 1, error="again", kind=kind) == "stale"


async def test_fail_rejects_unknown_kind(store: JobStore) -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        await store.fail("x", 1, error="e", kind="cancelled")


async def test_retry_then_retries_used_up(store: JobStore) -> None:
    await store.insert(job_id="r", type="ingest", payload=INGEST, max_retries=1, now_ms=T0)
    await claim_one(store, "r")
    await Batches(store).set_k8s_jobs([("r", 1, "aj-r-1")])
    assert await store.retry_or_fail("r", 2, error="x", backoff_seconds=1) == "stale"
    out = await store.retry_or_fail("r", 1, error="ECONNRESET", backoff_seconds=30, now_ms=T0 + 100)
    assert out == "requeued"
    row = await store.get("r")
    assert row is not None
    assert (row.status, row.retry_count, row.run_after, row.k8s_job, row.claimed_by) == (
        "pending",
        1,
        T0 + 30_100,
        None,
        None,
    )
    assert (row.error, row.error_kind, row.finished_at) == ("ECONNRESET", "transient", None)
    assert (await store.claim(worker_id="w", limit=5, now_ms=T0 + 30_099)).jobs == []
    again = await claim_one(store, "r", now=T0 + 30_100)
    assert again.attempt == 2
    assert await store.retry_or_fail("r", 1, error="late", backoff_seconds=1) == "stale"
    out = await store.retry_or_fail(
        "r", 2, error="ETIMEDOUT", backoff_seconds=30, now_ms=T0 + 40_000
    )
    assert out == "failed"
    row = await store.get("r")
    assert row is not None
    assert (row.status, row.retry_count, row.error, row.finished_at) == (
        "failed",
        1,
        "ETIMEDOUT (retries used up)",
        T0 + 40_000,
    )


async def test_cancel_pending_finishes_at_once(store: JobStore) -> None:
    await store.insert(job_id="p", type="ingest", payload=INGEST, now_ms=T0)
    assert await store.cancel("p", now_ms=T0 + 1)
    row = await store.get("p")
    assert row is not None
    assert (row.status, row.finished_at, row.error_kind) == ("cancelled", T0 + 1, "cancelled")
    assert await store.cancelled_unfinalized() == []
    assert await store.finalize_cancelled("p") == "stale"
    assert not await store.cancel("p")
    assert not await store.cancel("missing")
    assert (await store.claim(worker_id="w", limit=5)).jobs == []


async def test_cancel_processing_then_finalize(store: JobStore) -> None:
    await store.insert(job_id="k", type="ingest", payload=INGEST, now_ms=T0)
    await claim_one(store, "k")
    await store.heartbeat([Beat("k", 1, "render", 60)], now_ms=T0 + 20)
    assert await store.cancel("k", now_ms=T0 + 30)
    assert await store.heartbeat([Beat("k", 1, "render", 70)], now_ms=T0 + 40) == {"k"}
    assert await store.complete("k", 1, {}) == "stale"
    assert await store.retry_or_fail("k", 1, error="e", backoff_seconds=1) == "stale"
    assert [r.job_id for r in await store.cancelled_unfinalized()] == ["k"]
    assert (await store.counts()).inflight == 1
    assert await store.finalize_cancelled("k", now_ms=T0 + 50) == "applied"
    assert await store.finalize_cancelled("k", now_ms=T0 + 60) == "stale"
    row = await store.get("k")
    assert row is not None
    assert (row.status, row.stage, row.progress, row.finished_at, row.error_kind) == (
        "cancelled",
        None,
        0,
        T0 + 50,
        "cancelled",
    )
    assert (await store.counts()).inflight == 0
    assert not await store.cancel("k")


async def test_each_installation_lists_its_own_processing_rows(store: JobStore) -> None:
    for i in range(3):
        await store.insert(job_id=f"q{i}", type="ingest", payload=INGEST, now_ms=T0 + i)
    await store.claim(worker_id="a", limit=2, now_ms=T0 + 10)
    await store.claim(worker_id="b", limit=2, now_ms=T0 + 20)
    await store.heartbeat([Beat("q0", 1)], now_ms=T0 + 70_000)
    assert [r.job_id for r in await store.processing(worker_id="a")] == ["q1", "q0"]
    assert [r.job_id for r in await store.processing(worker_id="b")] == ["q2"]


async def test_counts(store: JobStore) -> None:
    assert (await store.counts()).pending == 0
    for i in range(6):
        await store.insert(job_id=f"n{i}", type="ingest", payload=INGEST, now_ms=T0 + i)
    await store.claim(worker_id="w", limit=3, now_ms=T0 + 10)
    await store.cancel("n0")  # processing -> cancelled, not yet finalized: still in flight
    await store.cancel("n5")  # pending -> cancelled and finished: gone from both counts
    await store.complete("n1", 1, {})
    counts = await store.counts()
    assert (counts.pending, counts.inflight) == (2, 2)


async def test_get_many(store: JobStore) -> None:
    for i in range(3):
        await store.insert(job_id=f"g{i}", type="ingest", payload=INGEST)
    got = await store.get_many(["g2", "g0", "g0", "missing"])
    assert sorted(got) == ["g0", "g2"]
    assert got["g2"].job_id == "g2"
    assert await store.get_many([]) == {}


async def test_attempts_ledger_and_workers(store: JobStore) -> None:
    batches = Batches(store)
    await batches.attempts_started([Started("j", 1, "pod-1", None, T0)])
    await batches.attempts_started([Started("j", 1, None, "node-a", T0 + 5)])
    await batches.attempts_ended([Ended("j", 1, 75, "transient", T0 + 9)])
    await batches.attempts_ended([Ended("j", 2, None, "pod deleted", T0 + 20)])
    # The first end recorded stays (a takeover's, or the real one): later ones change nothing.
    await batches.attempts_ended([Ended("j", 1, 0, "complete", T0 + 30)])
    ledger = await store.attempts("j")
    assert [
        (a.attempt, a.pod, a.node, a.started_at, a.ended_at, a.exit_code, a.reason) for a in ledger
    ] == [
        (1, "pod-1", "node-a", T0, T0 + 9, 75, "transient"),
        (2, None, None, None, T0 + 20, None, "pod deleted"),
    ]
    own = Ownership(store)
    await own.beat("ctl-1", "0.1.0", 0, longest_ms=9, start=True, now=T0)
    await own.beat("ctl-1", "0.1.0", 3, longest_ms=9, now=T0 + 30)
    await own.beat("ctl-2", "0.1.0", 1, longest_ms=9, start=True, now=T0 + 31)
    workers = {w.worker_id: w for w in await store.workers()}
    assert (workers["ctl-1"].version, workers["ctl-1"].started_at, workers["ctl-1"].last_seen) == (
        "0.1.0",
        T0,
        T0 + 30,
    )
    assert workers["ctl-1"].active == 3
    await own.beat("ctl-1", "0.2.0", 0, longest_ms=12, start=True, now=T0 + 40)
    workers = {w.worker_id: w for w in await store.workers()}
    assert (workers["ctl-1"].version, workers["ctl-1"].active) == ("0.2.0", 0)
    assert (workers["ctl-1"].started_at, workers["ctl-1"].longest_run_ms) == (T0 + 40, 12)


async def test_reopen_migrates_once_and_custom_table(db: DbSettings) -> None:
    custom = db.model_copy(update={"table": "render_jobs"})
    async with await JobStore.open(custom, retry=FAST_RETRY) as s1:
        await s1.insert(job_id="x", type="ingest", payload=INGEST)
    async with await JobStore.open(custom, retry=FAST_RETRY) as s2:
        assert (await s2.counts()).pending == 1
        rs, _ = await s2._run(
            "SELECT name FROM sqlite_master WHERE name LIKE 'render_job%' ORDER BY name", [], "t"
        )
        names = [r[0] for r in rs.rows]
        rs, _ = await s2._run("SELECT key, value FROM render_job_meta", [], "t")
        assert rs.rows == [("schema_version", str(SCHEMA_VERSION))]
    assert names == [
        "render_job_attempts",
        "render_job_ix_cancel_open",
        "render_job_ix_finished",
        "render_job_ix_pending",
        "render_job_ix_processing",
        "render_job_meta",
        "render_job_workers",
        "render_jobs",
    ]


async def test_shipped_sql_is_what_the_store_creates(tmp_path: Path) -> None:
    """The web app may apply schema.sql itself; the store then adopts that database."""
    by_app, by_store = tmp_path / "app.db", tmp_path / "store.db"
    with sqlite3.connect(by_app) as c:
        c.executescript(schema_sql())
    async with await JobStore.open(DbSettings(url=f"file:{by_store}")):
        pass
    async with await JobStore.open(DbSettings(url=f"file:{by_app}")) as s:
        await s.insert(job_id="x", type="ingest", payload=INGEST)

    def objects(path: Path) -> list[tuple[str, str]]:
        with sqlite3.connect(path) as c:
            return c.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()

    assert objects(by_app) == objects(by_store)


@pytest.mark.parametrize("form", ["libsql", "ws"])
async def test_other_url_forms_reach_the_http_pipeline(server: HranaServer, form: str) -> None:
    """`libsql://host:port?tls=0` (Turso's form, TLS off) and `ws://` name the same server's
    Hrana-over-HTTP endpoint."""
    url = {"libsql": f"libsql://127.0.0.1:{server.port}?tls=0", "ws": server.url("ws")}[form]
    async with await JobStore.open(DbSettings(url=url), retry=FAST_RETRY) as s:
        await s.insert(job_id="l", type="ingest", payload=INGEST, now_ms=T0)
        assert (await claim_one(s, "l")).attempt == 1
    assert server.stats.requests >= 3
