"""Bookkeeping for many rows in one statement (controller/store/batches.py)."""

from __future__ import annotations

from controller.store import Beat, JobStore
from controller.store.batches import Batches, Ended, Started
from controller.store.rows import MAX_BATCH

T0 = 1_700_000_000_000
INGEST = {"url": "https://example.com/a"}


async def test_job_names_are_recorded_only_for_the_attempt_still_processing(
    store: JobStore,
) -> None:
    for i in range(3):
        await store.insert(job_id=f"b{i}", type="ingest", payload=INGEST, now_ms=T0 + i)
    await store.claim(worker_id="w", limit=3, now_ms=T0 + 10)
    await store.complete("b2", 1, {})
    before = store.statements
    await Batches(store).set_k8s_jobs([("b0", 1, "aj-b0-1"), ("b1", 9, "x"), ("b2", 1, "y")])
    assert store.statements == before + 1
    rows = await store.get_many(["b0", "b1", "b2"])
    assert [rows[f"b{i}"].k8s_job for i in range(3)] == ["aj-b0-1", None, None]


async def test_the_attempts_ledger_in_one_statement_each_way(store: JobStore) -> None:
    batches = Batches(store)
    before = store.statements
    await batches.attempts_started(
        [Started("j", 1, "pod-1", "n1", T0), Started("k", 1, "pod-2", None, T0 + 1)]
    )
    await batches.attempts_ended(
        [Ended("j", 1, 0, "completed", T0 + 9), Ended("k", 1, 75, "transient", T0 + 8)]
    )
    assert store.statements == before + 2
    ledger = await store.attempts("j") + await store.attempts("k")
    assert [(a.job_id, a.pod, a.node, a.started_at, a.ended_at, a.exit_code) for a in ledger] == [
        ("j", "pod-1", "n1", T0, T0 + 9, 0),
        ("k", "pod-2", None, T0 + 1, T0 + 8, 75),
    ]


async def test_job_names_and_starts_go_in_one_request(store: JobStore) -> None:
    """The cycle waits on these: one round trip to a hosted database, not two."""
    for i in range(2):
        await store.insert(job_id=f"r{i}", type="ingest", payload=INGEST, now_ms=T0 + i)
    await store.claim(worker_id="w", limit=2, now_ms=T0 + 10)
    batches = Batches(store)
    before = store.statements
    await batches.record([("r0", 1, "aj-r0-1")], [Started("r1", 1, "pod-r1", "n1", T0 + 20)])
    assert store.statements == before + 1
    await batches.record([], [])
    assert store.statements == before + 1
    rows = await store.get_many(["r0", "r1"])
    assert rows["r0"].k8s_job == "aj-r0-1"
    assert [(a.pod, a.started_at) for a in await store.attempts("r1")] == [("pod-r1", T0 + 20)]


async def test_a_heartbeat_past_one_chunk_is_one_request(store: JobStore) -> None:
    n = MAX_BATCH + 10
    for i in range(n):
        await store.insert(job_id=f"h{i:04d}", type="ingest", payload=INGEST, now_ms=T0 + i)
    await store.claim(worker_id="w", limit=n, now_ms=T0 + n)
    await store.complete("h0003", 1, {})
    before = store.statements
    beats = [Beat(f"h{i:04d}", 1, "stage", 50) for i in range(n)]
    assert await store.heartbeat(beats, now_ms=T0 + 2 * n) == {"h0003"}
    assert store.statements == before + 1
    last = await store.get(f"h{n - 1:04d}")
    assert last is not None
    assert last.progress == 50
