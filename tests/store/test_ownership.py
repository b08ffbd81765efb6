"""Installations sharing one table: leases judged by the database's clock, fenced takeover."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from controller.settings import DbSettings
from controller.store import Beat, JobStore
from controller.store.ownership import Orphan, Ownership

T0 = 1_700_000_000_000
LEASE = 60_000
DEADLINES = {"ingest": 700_000, "preview": 400_000, "save": 1_000_000}
INGEST = {"url": "https://example.com/a"}


async def setup_rows(store: JobStore) -> Ownership:
    own = Ownership(store)
    for i in range(3):
        await store.insert(job_id=f"r{i}", type="ingest", payload=INGEST, now_ms=T0 + i)
    await store.claim(worker_id="dead", limit=2, now_ms=T0 + 10)
    await store.claim(worker_id="alive", limit=1, now_ms=T0 + 20)
    await own.beat("dead", "0.1.0", 2, start=True, now=T0 + 30)
    await own.beat("alive", "0.1.0", 1, start=True, now=T0 + 30)
    return own


async def first_orphan(own: Ownership, now: int) -> Orphan:
    await own.beat("alive", "0.1.0", 1, now=now)
    orphans = await own.dead_rows(me="a", lease_ms=LEASE, deadlines_ms=DEADLINES, limit=10, now=now)
    assert [o.row.claimed_by for o in orphans] == ["dead", "dead"]
    return orphans[0]


async def test_the_lease_is_written_by_the_database_clock(store: JobStore) -> None:
    own = Ownership(store)
    before = time.time() * 1000
    await own.beat("inst", "0.1.0", 0, start=True)
    after = time.time() * 1000
    (worker,) = await store.workers()
    # file: and the test server share this machine's clock, so the database's reading lies
    # between ours (give or take the julianday rounding).
    assert before - 5 <= worker.last_seen <= after + 5
    assert worker.started_at == worker.last_seen and worker.active == 0


async def test_rows_of_a_live_installation_are_never_orphans(store: JobStore) -> None:
    own = await setup_rows(store)
    kw = {"me": "taker", "lease_ms": LEASE, "deadlines_ms": DEADLINES, "limit": 10}
    assert await own.dead_rows(**kw, now=T0 + 30 + LEASE) == []
    late = T0 + 31 + LEASE
    await own.beat("alive", "0.1.0", 1, now=late)
    orphans = await own.dead_rows(**kw, now=late)
    assert sorted(o.row.job_id for o in orphans) == ["r0", "r1"]
    assert not any(o.past_deadline for o in orphans)
    past = T0 + 10 + DEADLINES["ingest"]
    await own.beat("alive", "0.1.0", 1, now=past)
    assert all(o.past_deadline for o in await own.dead_rows(**kw, now=past))
    # An installation never lists its own rows as orphans, whatever its lease says.
    assert await own.dead_rows(**(kw | {"me": "dead"}), now=past) == []


async def test_takeover_waits_for_the_run_deadline_and_only_one_taker_wins(
    store: JobStore,
) -> None:
    own = await setup_rows(store)
    kw = {"lease_ms": LEASE, "deadlines_ms": DEADLINES}
    early = T0 + 31 + LEASE
    orphan = await first_orphan(own, early)
    assert await own.take_over(orphan.row, me="a", at_once=False, now=early, **kw) is None
    past = T0 + 10 + DEADLINES["ingest"]
    won = await asyncio.gather(
        *(own.take_over(orphan.row, me=m, at_once=False, now=past, **kw) for m in ("a", "b"))
    )
    winners = [r for r in won if r is not None]
    assert len(winners) == 1
    row = winners[0]
    assert (row.attempt, row.status, row.k8s_job) == (2, "processing", None)
    assert row.claimed_by in ("a", "b") and row.started_at == past
    # The old owner's writes about its attempt are now stale.
    assert await store.heartbeat([Beat(row.job_id, 1)]) == {row.job_id}
    assert await store.complete(row.job_id, 1, {}) == "stale"


async def test_a_finished_job_in_the_takers_view_allows_takeover_at_once(
    store: JobStore,
) -> None:
    own = await setup_rows(store)
    kw = {"lease_ms": LEASE, "deadlines_ms": DEADLINES}
    early = T0 + 31 + LEASE
    orphan = await first_orphan(own, early)
    taken = await own.take_over(orphan.row, me="a", at_once=True, now=early, **kw)
    assert taken is not None and taken.attempt == 2


async def test_an_owner_that_comes_back_keeps_its_rows(store: JobStore) -> None:
    own = await setup_rows(store)
    kw = {"lease_ms": LEASE, "deadlines_ms": DEADLINES}
    past = T0 + 10 + DEADLINES["ingest"]
    orphan = await first_orphan(own, past)
    await own.beat("dead", "0.1.0", 2, now=past)
    assert await own.take_over(orphan.row, me="a", at_once=True, now=past, **kw) is None
    assert (await store.get(orphan.row.job_id)).claimed_by == "dead"  # type: ignore[union-attr]


async def test_cancelled_rows_of_a_dead_installation_need_no_capacity(store: JobStore) -> None:
    own = await setup_rows(store)
    await store.cancel("r0")
    kw = {"me": "a", "lease_ms": LEASE, "deadlines_ms": DEADLINES}
    past = T0 + 10 + DEADLINES["ingest"]
    await own.beat("alive", "0.1.0", 1, now=past)
    # Cancelled rows come first and are not capped: finalizing them takes no capacity.
    (orphan,) = await own.dead_rows(**kw, limit=0, now=past)
    assert (orphan.row.job_id, orphan.row.status, orphan.past_deadline) == ("r0", "cancelled", True)
    both = await own.dead_rows(**kw, limit=1, now=past)
    assert [(o.row.job_id, o.row.status) for o in both] == [
        ("r0", "cancelled"),
        ("r1", "processing"),
    ]


async def test_rows_past_the_window_or_without_a_worker_row_pass_only_the_ungated_check(
    store: JobStore,
) -> None:
    own = await setup_rows(store)
    await store.insert(job_id="g", type="ingest", payload=INGEST, now_ms=T0 + 40)
    await store.claim(worker_id="ghost", limit=1, now_ms=T0 + 50)
    kw = {"me": "a", "lease_ms": LEASE, "deadlines_ms": DEADLINES, "limit": 10}
    # Every installation with a worker row is alive: the gated check finds nothing to read.
    now = T0 + 60
    assert await own.dead_rows(**kw, now=now) == []
    (ghost,) = await own.dead_rows(**kw, gated=False, now=now)
    assert ghost.row.job_id == "g" and not ghost.past_deadline
    # "dead" stopped at T0 + 30; long after its window the gated check no longer looks.
    late = T0 + 31 + 2 * (LEASE + max(DEADLINES.values()))
    await own.beat("alive", "0.1.0", 1, now=late)
    assert await own.dead_rows(**kw, now=late) == []
    ungated = await own.dead_rows(**kw, gated=False, now=late)
    assert sorted(o.row.job_id for o in ungated) == ["g", "r0", "r1"]
    assert all(o.past_deadline for o in ungated)


def vm_steps(path: Path, sql: str, args: list[object]) -> int:
    """SQLite virtual machine steps one statement takes: grows with every row it reads."""
    steps = 0

    def tick() -> int:
        nonlocal steps
        steps += 1
        return 0

    with sqlite3.connect(path) as c:
        c.set_progress_handler(tick, 1)
        c.execute(sql, args).fetchall()
    return steps


async def test_the_check_reads_no_job_rows_while_every_installation_is_alive(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cost.db"
    store = await JobStore.open(DbSettings(url=f"file:{path}"))
    try:
        own = Ownership(store)
        await own.beat("dead", "0.1.0", 0, start=True, now=T0)

        async def add(n: int, start: int) -> None:
            for i in range(start, start + n):
                await store.insert(job_id=f"c{i}", type="ingest", payload=INGEST, now_ms=T0 + i)
            await store.claim(worker_id="alive", limit=n, now_ms=T0 + start + n)

        window = 2 * (LEASE + max(DEADLINES.values()))

        def steps(now: int) -> int:  # of the statement itself
            return vm_steps(
                path, own._dead_rows, ["me", LEASE, now, *DEADLINES.values(), 100, 0, window]
            )

        def reads_job_rows(now: int) -> bool:
            return steps(now) > few + 200  # reading 200 rows takes far more than 200 steps

        await add(5, 0)
        await own.beat("alive", "0.1.0", 5, now=T0)
        few = steps(T0)
        await add(200, 5)
        assert not reads_job_rows(T0)
        # Once an installation's lease has run out, the check does read the rows...
        await own.beat("alive", "0.1.0", 205, now=T0 + LEASE + 1)
        assert reads_job_rows(T0 + LEASE + 1)
        # ...until every row of the dead one has been past its run deadline for a while: a
        # worker row left behind for good (an uninstalled installation, or a controller from
        # before installation ids, which used its hostname-pid) costs nothing.
        later = T0 + 2 * (LEASE + max(DEADLINES.values()))
        await own.beat("alive", "0.1.0", 205, now=later)
        assert reads_job_rows(later)
        await own.beat("alive", "0.1.0", 205, now=later + 1)
        assert not reads_job_rows(later + 1)
    finally:
        await store.close()
