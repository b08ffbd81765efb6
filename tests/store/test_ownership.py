"""Installations sharing one table: leases judged by the database's clock, fenced takeover."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from controller.lifecycle import run_deadlines
from controller.settings import DbSettings, TimeoutSettings
from controller.store import Beat, JobStore
from controller.store.batches import Batches, Ended
from controller.store.ownership import Orphan, Ownership
from controller.store.params import Stmt
from controller.store.sql import Sql
from runner.payloads import JOB_TYPES

T0 = 1_700_000_000_000
LEASE = 60_000
DEADLINES = {"ingest": 700_000, "preview": 400_000, "save": 1_000_000}
"""The owners' run deadlines in these tests (lifecycle.run_deadlines)."""
LONGEST = max(DEADLINES.values())
SHORT = {"ingest": 10_000, "preview": 10_000, "save": 10_000}
"""A taker whose timeouts are much shorter than the owner's (a config change rolling out)."""
INGEST = {"url": "https://example.com/a"}


async def beat(own: Ownership, who: str, active: int, now: int, *, start: bool = False) -> None:
    await own.beat(who, "0.1.0", active, longest_ms=LONGEST, start=start, now=now)


async def setup_rows(store: JobStore) -> Ownership:
    own = Ownership(store)
    for i in range(3):
        await store.insert(job_id=f"r{i}", type="ingest", payload=INGEST, now_ms=T0 + i)
    await store.claim(worker_id="dead", limit=2, deadlines_ms=DEADLINES, now_ms=T0 + 10)
    await store.claim(worker_id="alive", limit=1, deadlines_ms=DEADLINES, now_ms=T0 + 20)
    await beat(own, "dead", 2, T0 + 30, start=True)
    await beat(own, "alive", 1, T0 + 30, start=True)
    return own


async def first_orphan(own: Ownership, now: int) -> Orphan:
    await beat(own, "alive", 1, now)
    orphans = await own.dead_rows(me="a", lease_ms=LEASE, longest_ms=LONGEST, limit=10, now=now)
    assert [o.row.claimed_by for o in orphans] == ["dead", "dead"]
    return orphans[0]


async def test_the_lease_is_written_by_the_database_clock(store: JobStore) -> None:
    own = Ownership(store)
    before = time.time() * 1000
    await own.beat("inst", "0.1.0", 0, longest_ms=LONGEST, start=True)
    after = time.time() * 1000
    (worker,) = await store.workers()
    # file: and the test server share this machine's clock, so the database's reading lies
    # between ours (give or take the julianday rounding).
    assert before - 5 <= worker.last_seen <= after + 5
    assert worker.started_at == worker.last_seen and worker.active == 0
    assert worker.longest_run_ms == LONGEST


async def test_rows_of_a_live_installation_are_never_orphans(store: JobStore) -> None:
    own = await setup_rows(store)
    kw = {"me": "taker", "lease_ms": LEASE, "longest_ms": LONGEST, "limit": 10}
    assert await own.dead_rows(**kw, now=T0 + 30 + LEASE) == []
    late = T0 + 31 + LEASE
    await beat(own, "alive", 1, late)
    orphans = await own.dead_rows(**kw, now=late)
    assert sorted(o.row.job_id for o in orphans) == ["r0", "r1"]
    assert not any(o.past_deadline for o in orphans)
    past = T0 + 10 + DEADLINES["ingest"]
    await beat(own, "alive", 1, past)
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
    await beat(own, "dead", 2, past)
    assert await own.take_over(orphan.row, me="a", at_once=True, now=past, **kw) is None
    assert (await store.get(orphan.row.job_id)).claimed_by == "dead"  # type: ignore[union-attr]


async def test_cancelled_rows_of_a_dead_installation_need_no_capacity(store: JobStore) -> None:
    own = await setup_rows(store)
    await store.cancel("r0")
    kw = {"me": "a", "lease_ms": LEASE, "longest_ms": LONGEST}
    past = T0 + 10 + DEADLINES["ingest"]
    await beat(own, "alive", 1, past)
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
    await store.claim(worker_id="ghost", limit=1, deadlines_ms=DEADLINES, now_ms=T0 + 50)
    kw = {"me": "a", "lease_ms": LEASE, "longest_ms": LONGEST, "limit": 10}
    # Every installation with a worker row is alive: the gated check finds nothing to read.
    now = T0 + 60
    assert await own.dead_rows(**kw, now=now) == []
    (ghost,) = await own.dead_rows(**kw, gated=False, now=now)
    assert ghost.row.job_id == "g" and not ghost.past_deadline
    # "dead" stopped at T0 + 30; long after its window the gated check no longer looks.
    late = T0 + 31 + 2 * (LEASE + LONGEST)
    await beat(own, "alive", 1, late)
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
        await beat(own, "dead", 0, T0, start=True)

        async def add(n: int, start: int) -> None:
            for i in range(start, start + n):
                await store.insert(job_id=f"c{i}", type="ingest", payload=INGEST, now_ms=T0 + i)
            await store.claim(
                worker_id="alive", limit=n, deadlines_ms=DEADLINES, now_ms=T0 + start + n
            )

        def steps(now: int) -> int:  # of the statement itself
            args = own._dead_rows.args(
                me="me", lease_ms=LEASE, longest_ms=LONGEST, limit=100, look_anyway=0, db_clock=now
            )
            return vm_steps(path, own._dead_rows.sql, args)

        def reads_job_rows(now: int) -> bool:
            return steps(now) > few + 200  # reading 200 rows takes far more than 200 steps

        await add(5, 0)
        await beat(own, "alive", 5, T0)
        few = steps(T0)
        await add(200, 5)
        assert not reads_job_rows(T0)
        # Once an installation's lease has run out, the check does read the rows...
        await beat(own, "alive", 205, T0 + LEASE + 1)
        assert reads_job_rows(T0 + LEASE + 1)
        # ...until every row of the dead one has been past its run deadline for a while: a
        # worker row left behind for good (an uninstalled installation, or a controller from
        # before installation ids, which used its hostname-pid) costs nothing.
        later = T0 + 2 * (LEASE + LONGEST)
        await beat(own, "alive", 205, later)
        assert reads_job_rows(later)
        await beat(own, "alive", 205, later + 1)
        assert not reads_job_rows(later + 1)
    finally:
        await store.close()


async def test_the_owners_run_deadline_holds_against_a_taker_with_shorter_timeouts(
    store: JobStore,
) -> None:
    """The double run of issue 17: the taker's own timeouts said the owner's pods were done."""
    own = await setup_rows(store)
    early = T0 + 31 + LEASE + SHORT["ingest"]  # the owner is dead, the taker's deadline passed
    await beat(own, "alive", 1, early)
    orphans = await own.dead_rows(me="b", lease_ms=LEASE, longest_ms=10_000, limit=10, now=early)
    assert [(o.row.job_id, o.past_deadline) for o in orphans] == [("r0", False), ("r1", False)]
    kw = {"me": "b", "lease_ms": LEASE, "deadlines_ms": SHORT, "at_once": False}
    assert await own.take_over(orphans[0].row, now=early, **kw) is None
    owners = T0 + 10 + DEADLINES["ingest"]
    assert await own.take_over(orphans[0].row, now=owners - 1, **kw) is None
    taken = await own.take_over(orphans[0].row, now=owners, **kw)
    # The new attempt runs under the taker's own deadline.
    assert taken is not None and taken.run_deadline == owners + SHORT["ingest"]
    assert [(a.attempt, a.reason) for a in await store.attempts("r0")] == [
        (1, "taken over: installation dead stopped")
    ]
    # The old owner's late outcome is stale, and its late ledger line changes nothing.
    assert await store.complete("r0", 1, {}) == "stale"
    await Batches(store).attempts_ended([Ended("r0", 1, 0, "complete", owners + 5)])
    assert [(a.attempt, a.reason) for a in await store.attempts("r0")] == [
        (1, "taken over: installation dead stopped")
    ]


async def test_a_taker_with_longer_timeouts_goes_by_the_owners_shorter_deadline(
    store: JobStore,
) -> None:
    own = Ownership(store)
    await store.insert(job_id="s", type="ingest", payload=INGEST, now_ms=T0)
    await store.claim(worker_id="dead", limit=1, deadlines_ms=SHORT, now_ms=T0 + 10)
    await own.beat("dead", "0.1.0", 1, longest_ms=10_000, start=True, now=T0 + 10)
    now = T0 + 10 + LEASE + 1
    (orphan,) = await own.dead_rows(me="b", lease_ms=LEASE, longest_ms=LONGEST, limit=1, now=now)
    assert orphan.past_deadline
    kw = {"me": "b", "lease_ms": LEASE, "deadlines_ms": DEADLINES, "at_once": False}
    taken = await own.take_over(orphan.row, now=now, **kw)
    assert taken is not None and taken.run_deadline == now + DEADLINES["ingest"]


async def test_a_row_claimed_before_run_deadlines_waits_for_the_longest_deadline_known(
    store: JobStore,
) -> None:
    """Claimed by a version-1 controller: no `run_deadline`, and maybe no `longest_run_ms`."""
    own = Ownership(store)
    await store.insert(job_id="v1", type="ingest", payload=INGEST, now_ms=T0)
    await store.claim(worker_id="old", limit=1, now_ms=T0 + 10)  # as version 1 did
    assert (await store.get("v1")).run_deadline is None  # type: ignore[union-attr]
    await store._calls.run(
        "INSERT INTO audio_job_workers (worker_id, version, started_at, last_seen)"
        " VALUES ('old', '0.1.0', ?1, ?1)",
        [T0 + 10],
        "a version-1 worker row",
    )
    kw = {"me": "b", "lease_ms": LEASE, "limit": 1}
    # Nothing says how long the owner's pods may run: the taker's longest deadline, any type.
    mine = T0 + 10 + LONGEST
    assert not (await own.dead_rows(**kw, longest_ms=LONGEST, now=mine - 1))[0].past_deadline
    assert (await own.dead_rows(**kw, longest_ms=LONGEST, now=mine))[0].past_deadline
    # The owner's worker row names a longer one (upgraded after the claim): that one.
    await store._calls.run(
        "UPDATE audio_job_workers SET longest_run_ms = ?1", [2 * LONGEST], "owner's longest"
    )
    assert not (await own.dead_rows(**kw, longest_ms=LONGEST, now=mine))[0].past_deadline
    theirs = T0 + 10 + 2 * LONGEST
    (orphan,) = await own.dead_rows(**kw, longest_ms=LONGEST, now=theirs)
    assert orphan.past_deadline
    assert (
        await own.take_over(
            orphan.row,
            me="b",
            lease_ms=LEASE,
            deadlines_ms=DEADLINES,
            at_once=False,
            now=theirs - 1,
        )
        is None
    )


async def test_the_gate_stays_open_for_the_owners_longest_deadline(tmp_path: Path) -> None:
    """A taker with short timeouts still looks while a dead owner's long runs become due."""
    store = await JobStore.open(DbSettings(url=f"file:{tmp_path / 'gate.db'}"))
    try:
        own = Ownership(store)
        await store.insert(job_id="long", type="ingest", payload=INGEST, now_ms=T0)
        await store.claim(worker_id="dead", limit=1, deadlines_ms=DEADLINES, now_ms=T0)
        await own.beat("dead", "0.1.0", 1, longest_ms=LONGEST, start=True, now=T0)
        due = T0 + DEADLINES["ingest"]
        kw = {"me": "b", "lease_ms": LEASE, "longest_ms": 10_000, "limit": 1}
        (orphan,) = await own.dead_rows(**kw, now=due)
        assert orphan.row.job_id == "long" and orphan.past_deadline
        # Past twice (lease + the owner's longest) the gate closes, as before.
        assert await own.dead_rows(**kw, now=T0 + 2 * (LEASE + LONGEST) + 1) == []
    finally:
        await store.close()


async def test_claims_stamp_each_type_with_its_deadline_and_no_sql_names_a_type(
    store: JobStore,
) -> None:
    deadlines = run_deadlines(TimeoutSettings(), margin=60)
    assert set(deadlines) == set(JOB_TYPES)
    for t in [*JOB_TYPES, "unheard-of"]:
        await store.insert(job_id=t, type=t, payload=INGEST, now_ms=T0)
    claim = await store.claim(worker_id="w", limit=10, deadlines_ms=deadlines, now_ms=T0 + 1)
    # (The payloads fit only ingest: the others are failed right after, as rows are.)
    stamped = {c.row.type: c.row.run_deadline for c in [*claim.jobs, *claim.rejected]}
    longest = max(deadlines.values())
    assert stamped == {t: T0 + 1 + ms for t, ms in (deadlines | {"unheard-of": longest}).items()}
    sql = Sql("audio_jobs")
    own = Ownership(store)
    texts = [
        sql.claim(len(JOB_TYPES), after_loss=False).sql,
        sql.claim(len(JOB_TYPES), after_loss=True).sql,
        *(v.sql for v in vars(sql).values() if isinstance(v, Stmt)),
        *(v.sql for v in vars(own).values() if isinstance(v, Stmt)),
    ]
    assert len(texts) > 10
    for text in texts:
        assert not [t for t in JOB_TYPES if f"'{t}'" in text], text
