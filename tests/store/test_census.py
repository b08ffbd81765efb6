"""The census (queue-metrics' audiojob_rows, the status view) on both backends, and its plans:
live rows through their partial indexes with a cap, finished rows only in a rowid window."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from controller.settings import DbSettings
from controller.store import JobStore
from controller.store.census import Census
from controller.store.outcome_writes import Completion, Failure
from tests.store.test_plans import plan

INGEST = {"url": "https://example.com/a"}
PREVIEW = {"input": "a.mp3"}
T0 = 1_700_000_000_000


async def seed(store: JobStore) -> None:
    """6 ingest + 2 preview pending; 4 ingest claimed: 1 completes, 1 fails, 1 is cancelled
    while it runs (cancelling), 1 keeps running; 1 typo'd type pending."""
    for i in range(6):
        await store.insert(job_id=f"i{i}", type="ingest", payload=INGEST, now_ms=T0 + i)
    for i in range(2):
        await store.insert(job_id=f"p{i}", type="preview", payload=PREVIEW, now_ms=T0 + 10 + i)
    claim = await store.claim(worker_id="w", limit=4, now_ms=T0 + 100)
    assert sorted(j.row.job_id for j in claim.jobs) == ["i0", "i1", "i2", "i3"]
    await store.complete_many([Completion("i0", 1, {"ok": 1})], now_ms=T0 + 200)
    await store.fail_many(
        [Failure("i1", 1, "yt-dlp could not download https://x: HTTP 404", "permanent")],
        now_ms=T0 + 300,
    )
    assert await store.cancel("i2", now_ms=T0 + 400)
    await store._run(
        "INSERT INTO audio_jobs (job_id, type, payload) VALUES ('odd', 'transcode', '{}')",
        [],
        "insert a row the runner does not know",
    )


async def test_counts_in_flight_and_recent_failures(store: JobStore) -> None:
    await seed(store)
    census = Census(store, "audio_jobs")
    assert await census.live() == {
        ("pending", "ingest"): 2,
        ("pending", "preview"): 2,
        ("pending", "other"): 1,
        ("processing", "ingest"): 1,
        ("cancelling", "ingest"): 1,
    }
    assert [r.job_id for r in await census.in_flight()] == ["i3"]
    recent = await census.recent()
    assert recent.counts == {("complete", "ingest"): 1, ("failed", "ingest"): 1}
    assert [(r.job_id, r.error) for r in recent.failures] == [
        ("i1", "yt-dlp could not download https://x: HTTP 404")
    ]


async def test_each_status_is_counted_up_to_the_cap(store: JobStore) -> None:
    await seed(store)
    live = await Census(store, "audio_jobs").live(cap=3)
    assert sum(n for (s, _), n in live.items() if s == "pending") == 3
    assert live[("processing", "ingest")] == 1


async def test_recent_looks_only_at_the_newest_rows(store: JobStore) -> None:
    await seed(store)
    # The seed's finished rows are among its first 9 inserts; a window of 2 sees only the
    # 2 newest rows (p1 and 'odd'), neither finished.
    recent = await Census(store, "audio_jobs").recent(window=2)
    assert recent.counts == {} and recent.failures == []


async def test_plans_read_indexes_and_a_rowid_range(tmp_path: Path) -> None:
    path = tmp_path / "plans.db"
    async with await JobStore.open(DbSettings(url=f"file:{path}")) as store:
        await seed(store)
        census = Census(store, "audio_jobs")
    conn = sqlite3.connect(path)
    conn.execute("ANALYZE")
    live = plan(conn, census._live, cap=10)
    for index in ("audio_job_ix_pending", "audio_job_ix_processing", "audio_job_ix_cancel_open"):
        assert any(index in line for line in live), live
    assert not any(line.startswith("SCAN audio_jobs") for line in live), live
    for stmt, roles in (
        (census._recent_counts, {"window": 10}),
        (census._recent_failures, {"window": 10, "limit": 5}),
    ):
        lines = plan(conn, stmt, **roles)
        assert any("USING INTEGER PRIMARY KEY (rowid>?)" in line for line in lines), lines
        assert not any(line.startswith("SCAN audio_jobs") for line in lines), lines
