"""Injected faults: each call is retried or fails with a clear error, and nothing is half-written.

Wire faults go through the Hrana-over-HTTP test server, as sqld and hosted Turso produce them
(dropped connections, delays, 5xx from a proxy, 429 with Retry-After, TRANSACTION_BUSY,
TRANSACTION_TIMEOUT, BLOCKED); `database is locked` is produced on a real file database by
holding its write lock from another connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from controller.settings import DbSettings
from controller.store import JobStore, RetryPolicy, StoreError, StoreUnavailable
from devcluster.hrana_server import HranaServer

from .conftest import FAST_RETRY

INGEST = {"url": "https://example.com/a"}
T0 = 1_700_000_000_000


async def seed(store: JobStore, n: int) -> None:
    for i in range(n):
        await store.insert(job_id=f"j{i}", type="ingest", payload=INGEST, now_ms=T0 + i)


async def statuses(store: JobStore, n: int) -> list[tuple[str, int]]:
    rows = await store.get_many([f"j{i}" for i in range(n)])
    return [(rows[f"j{i}"].status, rows[f"j{i}"].attempt) for i in range(n)]


@pytest.mark.parametrize("after_execute", [False, True])
async def test_dropped_socket_during_complete(
    wire: JobStore, server: HranaServer, after_execute: bool
) -> None:
    await seed(wire, 1)
    await wire.claim(worker_id="w", limit=1)
    server.faults.drop(after_execute=after_execute, match="'complete'")
    # When the answer is lost after the commit, the retry finds nothing to change and the
    # read-back shows our own write: the caller hears `applied`, not a false `stale`.
    assert await wire.complete("j0", 1, {"ok": 1}, now_ms=T0 + 5) == "applied"
    assert server.faults.fired == ["drop_after" if after_execute else "drop_before"]
    row = await wire.get("j0")
    assert row is not None
    assert (row.status, row.attempt, row.finished_at, row.result_json()) == (
        "complete",
        1,
        T0 + 5,
        {"ok": 1},
    )
    assert await wire.complete("j0", 1, {"ok": 2}) == "stale"


async def test_claim_answer_lost_after_commit(wire: JobStore, server: HranaServer) -> None:
    await seed(wire, 5)
    server.faults.drop(after_execute=True, match="SET status = 'processing'")
    claim = await wire.claim(worker_id="w", limit=3, now_ms=T0 + 10)
    assert server.faults.fired == ["drop_after"]
    # The rows the lost try claimed come back; the retry took none beyond the limit.
    assert [j.row.job_id for j in claim.jobs] == ["j0", "j1", "j2"]
    assert await statuses(wire, 5) == [("processing", 1)] * 3 + [("pending", 0)] * 2


async def test_timeout_is_retried(wire: JobStore, server: HranaServer) -> None:
    await seed(wire, 4)
    server.faults.delay(2.0, match="SET status = 'processing'")
    claim = await wire.claim(worker_id="w", limit=2, now_ms=T0 + 10)
    assert server.faults.fired == ["delay"]
    assert [j.row.job_id for j in claim.jobs] == ["j0", "j1"]
    # The abandoned try still runs on the server when its delay ends and takes two more rows
    # for this worker. They are not lost: reconcile finds them (processing, mine, no Job).
    for _ in range(200):
        if (await statuses(wire, 4))[3][0] == "processing":
            break
        await asyncio.sleep(0.05)
    assert await statuses(wire, 4) == [("processing", 1)] * 4
    orphans = [r.job_id for r in await wire.processing(worker_id="w") if r.k8s_job is None]
    assert sorted(orphans) == ["j0", "j1", "j2", "j3"]


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_server_errors_are_retried(wire: JobStore, server: HranaServer, status: int) -> None:
    await seed(wire, 1)
    server.faults.http_status(status, count=2, match="'complete'")
    assert (await wire.claim(worker_id="w", limit=1)).jobs
    assert await wire.complete("j0", 1, {}) == "applied"
    assert server.faults.fired == ["http_status"] * 2


async def test_429_waits_as_long_as_retry_after_says(wire: JobStore, server: HranaServer) -> None:
    await seed(wire, 1)
    server.faults.too_many_requests(retry_after=0.6, match="'processing'")
    started = time.monotonic()
    claim = await wire.claim(worker_id="w", limit=1)
    # FAST_RETRY alone would wait 10-20 ms; the server asked for 0.6 s.
    assert time.monotonic() - started >= 0.6
    assert server.faults.fired == ["too_many_requests"]
    assert [j.row.job_id for j in claim.jobs] == ["j0"]


@pytest.mark.parametrize("fault", ["busy", "transaction_timeout"])
async def test_transaction_busy_and_timeout_are_retried(
    wire: JobStore, server: HranaServer, fault: str
) -> None:
    await seed(wire, 2)
    getattr(server.faults, fault)(count=2, match="'processing'")
    claim = await wire.claim(worker_id="w", limit=2, now_ms=T0 + 10)
    assert server.faults.fired == [fault] * 2
    assert [j.row.job_id for j in claim.jobs] == ["j0", "j1"]
    assert await statuses(wire, 2) == [("processing", 1)] * 2


async def test_blocked_is_retried(wire: JobStore, server: HranaServer) -> None:
    await seed(wire, 1)
    server.faults.blocked(count=3)
    assert await wire.cancel("j0")
    assert server.faults.fired == ["blocked"] * 3
    row = await wire.get("j0")
    assert row is not None and row.status == "cancelled"


async def test_blocked_past_the_budget_is_unavailable(wire: JobStore, server: HranaServer) -> None:
    await seed(wire, 2)
    server.faults.blocked(count=100)
    with pytest.raises(StoreUnavailable) as info:
        await wire.claim(worker_id="w", limit=2)
    assert "gave up after 6 tries" in str(info.value)
    assert "quota" in str(info.value)
    server.faults.clear()
    assert await statuses(wire, 2) == [("pending", 0)] * 2
    assert len((await wire.claim(worker_id="w", limit=2)).jobs) == 2


async def test_short_outage_is_ridden_out(server: HranaServer) -> None:
    patient = RetryPolicy(attempts=12, base_seconds=0.05, cap_seconds=0.4)
    async with await JobStore.open(DbSettings(url=server.url()), retry=patient) as store:
        await seed(store, 1)
        server.down_for(0.5)
        assert (await store.claim(worker_id="w", limit=1)).jobs[0].row.job_id == "j0"
        assert await statuses(store, 1) == [("processing", 1)]


async def test_long_outage_is_unavailable_then_recovers(
    wire: JobStore, server: HranaServer
) -> None:
    await seed(wire, 1)
    server.down_for(3.0)
    with pytest.raises(StoreUnavailable, match="gave up after 6 tries"):
        await wire.claim(worker_id="w", limit=1)
    for _ in range(200):  # the server is back after 3 s; the same store reconnects by itself
        try:
            claim = await wire.claim(worker_id="w", limit=1)
            break
        except StoreUnavailable:
            await asyncio.sleep(0.05)
    assert [j.row.job_id for j in claim.jobs] == ["j0"]
    assert await statuses(wire, 1) == [("processing", 1)]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT nope FROM audio_jobs", "no such column: nope"),
        ("SELEC 1", "syntax error"),
        ("INSERT INTO audio_jobs (job_id, type) VALUES ('j0', 'ingest')", "SQLITE_CONSTRAINT"),
    ],
)
async def test_sql_errors_are_not_retried(
    wire: JobStore, server: HranaServer, sql: str, expected: str
) -> None:
    await seed(wire, 1)
    before = server.stats.requests
    with pytest.raises(StoreError) as info:
        await wire._run(sql, [], "probe")
    assert not isinstance(info.value, StoreUnavailable)
    assert "probe: " in str(info.value) and expected in str(info.value)
    assert server.stats.requests == before + 1


async def test_database_is_locked_is_retried(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    async with await JobStore.open(DbSettings(url=f"file:{path}"), retry=FAST_RETRY) as store:
        await seed(store, 1)
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE audio_jobs SET priority = 7")
        released = threading.Event()

        def release() -> None:
            time.sleep(0.3)
            holder.execute("COMMIT")
            holder.close()
            released.set()

        threading.Thread(target=release).start()
        claim = await store.claim(worker_id="w", limit=1)
        assert released.is_set()  # the claim could only land after the lock was let go
        assert [(j.row.job_id, j.row.priority, j.row.attempt) for j in claim.jobs] == [("j0", 7, 1)]


async def test_locked_past_the_budget_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    brief = RetryPolicy(busy_attempts=5)
    async with await JobStore.open(DbSettings(url=f"file:{path}"), retry=brief) as store:
        await seed(store, 1)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailable, match="database is locked"):
                await store.claim(worker_id="w", limit=1)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert await statuses(store, 1) == [("pending", 0)]
