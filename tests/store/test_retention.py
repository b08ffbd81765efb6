"""Retention: finished rows past the kept period go with their attempts-ledger rows, younger and
unfinished rows stay, a large backlog goes in small batches while claims go on, and an outage
only postpones it. Bad settings stop the start with one sentence."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from controller.engine.retention import DAY_MS, Pruner
from controller.settings import DbSettings, RetentionSettings, SettingsError, load_settings
from controller.store import JobStore, now_ms
from controller.store.batches import Batches, Ended, Started
from devcluster.hrana_server import HranaServer

from .conftest import write_rows

T0 = 1_700_000_000_000
NOW = T0 + 30 * DAY_MS
INGEST = {"url": "https://example.com/a"}


def pruner(store: JobStore, days: float = 7, batch: int = 500) -> Pruner:
    settings = RetentionSettings(finished_days=days, batch_rows=batch, interval_seconds=0.01)
    return Pruner(settings=settings, store=store, table="audio_jobs")


async def finished(store: JobStore, job_id: str, at: int, how: str) -> None:
    """A row claimed, run (with its ledger rows) and finished at `at` as `how`."""
    await store.insert(job_id=job_id, type="ingest", payload=INGEST, now_ms=at - 10)
    (_,) = (await store.claim(worker_id="me", limit=1, now_ms=at - 5)).jobs
    await Batches(store).attempts_started([Started(job_id, 1, "p", "n", at - 5)])
    await Batches(store).attempts_ended([Ended(job_id, 1, 0, "done", at)])
    if how == "complete":
        assert await store.complete(job_id, 1, {"ok": True}, now_ms=at) == "applied"
    elif how == "failed":
        assert await store.fail(job_id, 1, error="bad", kind="permanent", now_ms=at) == "applied"
    else:
        assert await store.cancel(job_id, now_ms=at)
        if how == "cancelled":
            assert await store.finalize_cancelled(job_id, now_ms=at) == "applied"


async def test_rows_past_retention_go_with_their_ledger_and_the_rest_stay(
    store: JobStore,
) -> None:
    old, young = T0, NOW - 1 * DAY_MS
    for how in ("complete", "failed", "cancelled"):
        await finished(store, f"old-{how}", old, how)
        await finished(store, f"young-{how}", young, how)
    await finished(store, "old-cancelling", old, "cancelling")  # its pod is not gone yet
    await store.insert(job_id="old-pending", type="ingest", payload=INGEST, now_ms=old)
    await store.cancel("old-pending", now_ms=old)  # a pending row cancelled: finished at once
    await store.insert(job_id="old-waiting", type="ingest", payload=INGEST, now_ms=old)
    await store.insert(job_id="old-running", type="ingest", payload=INGEST, now_ms=old - 1)
    (running,) = (await store.claim(worker_id="me", limit=1, now_ms=old)).jobs  # FIFO
    assert running.row.job_id == "old-running"

    p = pruner(store, days=7, batch=2)
    assert await p.run(now=NOW) == 4
    assert p.batches == 3  # 2, 2, then one that found none left

    gone = ["old-complete", "old-failed", "old-cancelled", "old-pending"]
    kept = ["young-complete", "young-failed", "young-cancelled", "old-cancelling"]
    kept += ["old-waiting", "old-running"]
    rows = await store.get_many(gone + kept)
    assert sorted(rows) == sorted(kept)
    for job_id in gone:
        assert await store.attempts(job_id) == []
    for job_id in ("young-complete", "old-cancelling"):
        assert [a.reason for a in await store.attempts(job_id)] == ["done"]
    assert await p.run(now=NOW) == 0


def fill_old(path: Path, n: int, now: int) -> None:
    """`n` rows finished a year ago and `n` finished yesterday, each with one ledger row, and
    20,000 pending rows."""
    finished = (
        "INSERT INTO audio_jobs (job_id, type, status, payload, attempt, created_at,"
        " updated_at, finished_at) VALUES (?, 'ingest', 'complete', '{}', 1, ?, ?, ?)"
    )
    ledger = "INSERT INTO audio_job_attempts (job_id, attempt, ended_at) VALUES (?, 1, ?)"
    pending = (
        "INSERT INTO audio_jobs (job_id, type, status, payload, created_at, updated_at)"
        " VALUES (?, 'ingest', 'pending', '{\"url\": \"https://example.com/a\"}', ?, ?)"
    )
    ages = (("h", 365), ("y", 1))
    write_rows(
        path,
        [
            (
                finished,
                (
                    (f"{age}{i}", now - 400 * DAY_MS, now, now - days * DAY_MS + i)
                    for age, days in ages
                    for i in range(n)
                ),
            ),
            (ledger, ((f"{age}{i}", now) for age, _ in ages for i in range(n))),
            (pending, ((f"p{i}", T0 + i, T0) for i in range(20_000))),
        ],
    )


def count(path: Path, sql: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


async def test_a_large_backlog_is_pruned_in_batches_while_claims_go_on(
    db: DbSettings, tmp_path: Path
) -> None:
    path = tmp_path / ("local.db" if db.url.startswith("file:") else "served.db")
    store = await JobStore.open(db)
    try:
        fill_old(path, 20_000, now_ms())  # poke() prunes by the wall clock
        p = pruner(store, days=7, batch=500)
        task = p.poke()
        assert task is not None and p.poke() is None  # one run at a time
        seen: list[int] = []  # batches done when each claim returned
        while not task.done():
            claim = await store.claim(worker_id="me", limit=1)
            assert len(claim.jobs) == 1
            seen.append(p.batches)
        assert await task == 20_000
        assert p.batches == 41  # 40 full batches, then one that found nothing
        # Claims were answered between batches, not after the whole backlog.
        assert any(0 < b < p.batches for b in seen)
        # Each batch read a few rows per row it deleted (index entries, the row, the lists
        # that carry the batch), through the retention index; and with nothing old left, a
        # run reads next to nothing beside the 20,000 younger finished rows.
        assert store.rows_read["retention"] <= 10 * 20_000 + 40 * p.batches
        before = store.rows_read["retention"]
        assert await p.run() == 0
        assert store.rows_read["retention"] - before <= 10
        assert count(path, "SELECT COUNT(*) FROM audio_jobs WHERE job_id LIKE 'h%'") == 0
        assert count(path, "SELECT COUNT(*) FROM audio_jobs WHERE job_id LIKE 'y%'") == 20_000
        assert count(path, "SELECT COUNT(*) FROM audio_job_attempts") == 20_000
    finally:
        await store.close()


async def test_an_outage_postpones_pruning_and_claims_go_on(
    wire: JobStore, server: HranaServer
) -> None:
    await finished(wire, "old", T0, "complete")
    await wire.insert(job_id="next", type="ingest", payload=INGEST, now_ms=NOW)
    server.faults.http_status(503, count=1_000, match="DELETE FROM audio_job_attempts")
    p = pruner(wire)
    assert await p.run(now=NOW) == 0  # gave up, logged, no exception
    assert "http_status" in server.faults.fired
    claim = await wire.claim(worker_id="me", limit=1, now_ms=NOW)
    assert [j.row.job_id for j in claim.jobs] == ["next"]
    assert await wire.get("old") is not None

    server.faults.clear()
    assert await p.run(now=NOW) == 1
    assert await wire.get("old") is None


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("AUDIOJOB_RETENTION__FINISHED_DAYS", "0", "Input should be greater than 0"),
        ("AUDIOJOB_RETENTION__FINISHED_DAYS", "-3", "Input should be greater than 0"),
        ("AUDIOJOB_RETENTION__FINISHED_DAYS", "a week", "Input should be a valid number"),
        ("AUDIOJOB_RETENTION__FINISHED_DAYS", "nan", "Input should be a finite number"),
        ("AUDIOJOB_RETENTION__BATCH_ROWS", "0", "Input should be greater than or equal to 1"),
        ("AUDIOJOB_METRICS__QUEUE_COUNT_CAP", "0", "Input should be greater than 0"),
        ("AUDIOJOB_METRICS__QUEUE_COUNT_CAP", "-1", "Input should be greater than 0"),
        ("AUDIOJOB_METRICS__QUEUE_COUNT_CAP", "many", "Input should be a valid integer"),
    ],
)
def test_a_bad_cap_or_retention_stops_the_start_with_one_sentence(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, message: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as e:
        load_settings()
    text = str(e.value)
    assert text.startswith(f"invalid setting {env}: {message}") and "\n" not in text


def test_retention_is_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUDIOJOB_RETENTION__FINISHED_DAYS", raising=False)
    settings = load_settings()
    assert settings.retention.finished_days is None
    assert settings.metrics.queue_count_cap == 1_000


async def test_a_disabled_pruner_never_starts(store: JobStore) -> None:
    p = Pruner(settings=RetentionSettings(), store=store, table="audio_jobs")
    assert p.poke() is None and await p.run(now=NOW) == 0
    await asyncio.sleep(0)
    assert not p.running
