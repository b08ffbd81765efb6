"""Installations sharing one table: leases judged by the database's clock, fenced takeover."""

from __future__ import annotations

import asyncio
import time

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
    orphans = await own.orphans(me="a", lease_ms=LEASE, deadlines_ms=DEADLINES, limit=10, now=now)
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
    assert await own.orphans(**kw, now=T0 + 30 + LEASE) == []
    late = T0 + 31 + LEASE
    await own.beat("alive", "0.1.0", 1, now=late)
    orphans = await own.orphans(**kw, now=late)
    assert sorted(o.row.job_id for o in orphans) == ["r0", "r1"]
    assert not any(o.past_deadline for o in orphans)
    past = T0 + 10 + DEADLINES["ingest"]
    await own.beat("alive", "0.1.0", 1, now=past)
    assert all(o.past_deadline for o in await own.orphans(**kw, now=past))
    # An installation never lists its own rows as orphans, whatever its lease says.
    assert await own.orphans(**(kw | {"me": "dead"}), now=past) == []


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


async def test_cancelled_rows_of_a_dead_installation(store: JobStore) -> None:
    own = await setup_rows(store)
    await store.cancel("r0")
    kw = {"me": "a", "lease_ms": LEASE, "deadlines_ms": DEADLINES}
    past = T0 + 10 + DEADLINES["ingest"]
    (orphan,) = await own.cancelled_orphans(**kw, now=past)
    assert orphan.row.job_id == "r0" and orphan.past_deadline
