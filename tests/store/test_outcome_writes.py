"""Outcomes for many rows in one statement per kind (controller/store/outcome_writes.py), each
row fenced as a single write is, with an answer per row."""

from __future__ import annotations

import json

import pytest

from controller.store import JobStore
from controller.store.outcome_writes import Completion, Failure, Requeue
from controller.store.ownership import Ownership
from controller.store.rows import MAX_BATCH
from devcluster.hrana_server import HranaServer

T0 = 1_700_000_000_000
INGEST = {"url": "https://example.com/a"}


async def running(store: JobStore, n: int, *, max_retries: int = 1) -> None:
    for i in range(n):
        await store.insert(
            job_id=f"o{i}", type="ingest", payload=INGEST, max_retries=max_retries, now_ms=T0 + i
        )
    assert len((await store.claim(worker_id="w", limit=n, now_ms=T0 + 100)).jobs) == n


async def test_completions_in_one_statement_fenced_per_row(store: JobStore) -> None:
    await running(store, 5)
    assert await store.cancel("o1")  # the app cancelled it meanwhile
    # Another installation took o2 over (its owner "w" has no fresh worker row): attempt 2.
    row = await store.get("o2")
    assert row is not None
    taken = await Ownership(store).take_over(
        row, me="other", lease_ms=1_000, deadlines_ms={"ingest": 0}, at_once=True
    )
    assert taken is not None and taken.attempt == 2
    before = store.statements
    answers = await store.complete_many(
        [
            Completion("o0", 1, {"n": 0}),
            Completion("o1", 1, {"n": 1}),
            Completion("o2", 1, {"n": 2}),
            Completion("o3", 7, {"n": 3}),
            Completion("o4", 1, {"n": 4}),
        ],
        now_ms=T0 + 500,
    )
    assert store.statements == before + 1
    assert answers == {
        "o0": "applied",
        "o1": "stale",
        "o2": "stale",
        "o3": "stale",
        "o4": "applied",
    }
    rows = await store.get_many([f"o{i}" for i in range(5)])
    got = [(r.status, r.attempt, r.claimed_by, r.result_json()) for r in rows.values()]
    assert got == [
        ("complete", 1, "w", {"n": 0}),
        ("cancelled", 1, "w", None),
        ("processing", 2, "other", None),
        ("processing", 1, "w", None),
        ("complete", 1, "w", {"n": 4}),
    ]
    assert (rows["o0"].finished_at, rows["o0"].progress, rows["o0"].error) == (T0 + 500, 100, None)
    assert rows["o1"].finished_at is None  # still waits for its pod to be confirmed gone


async def test_failures_and_retries_in_one_statement_each(store: JobStore) -> None:
    await running(store, 4)
    # o1 already used its one retry: requeued once, claimed again, failing again.
    first = await store.retry_or_fail("o1", 1, error="e", backoff_seconds=0, now_ms=T0 + 150)
    assert first == "requeued"
    again = await store.claim(worker_id="w", limit=1, now_ms=T0 + 200)
    assert [(j.row.job_id, j.row.attempt) for j in again.jobs] == [("o1", 2)]
    before = store.statements
    failed = await store.fail_many(
        [Failure("o0", 1, "yt-dlp: HTTP 403", "permanent"), Failure("o3", 9, "late", "timeout")],
        now_ms=T0 + 300,
    )
    retried = await store.retry_many(
        [
            Requeue("o1", 2, "ECONNRESET", backoff_seconds=5),
            Requeue("o2", 1, "evicted", kind="lost", backoff_seconds=30),
            Requeue("o3", 1, "node lost", kind="lost", backoff_seconds=30),
        ],
        now_ms=T0 + 400,
    )
    assert store.statements == before + 2
    assert failed == {"o0": "applied", "o3": "stale"}
    assert retried == {"o1": "failed", "o2": "requeued", "o3": "requeued"}
    rows = await store.get_many([f"o{i}" for i in range(4)])
    got = [(r.status, r.error, r.error_kind, r.retry_count, r.run_after) for r in rows.values()]
    assert got == [
        ("failed", "yt-dlp: HTTP 403", "permanent", 0, None),
        ("failed", "ECONNRESET (retries used up)", "transient", 1, T0 + 150),
        ("pending", "evicted", "lost", 1, T0 + 400 + 30_000),
        ("pending", "node lost", "lost", 1, T0 + 400 + 30_000),
    ]
    assert [rows[f"o{i}"].finished_at for i in range(4)] == [T0 + 300, T0 + 400, None, None]


async def test_a_bad_kind_writes_nothing(store: JobStore) -> None:
    await running(store, 2)
    with pytest.raises(ValueError, match="kind must be one of"):
        await store.fail_many([Failure("o0", 1, "e", "permanent"), Failure("o1", 1, "e", "oops")])
    rows = await store.get_many(["o0", "o1"])
    assert {r.status for r in rows.values()} == {"processing"}


async def test_a_large_batch_is_split_below_the_parameter_limit(store: JobStore) -> None:
    n = 2 * MAX_BATCH + 1
    await store._run(
        "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < ?1)"
        " INSERT INTO audio_jobs (job_id, type, status, payload, created_at, updated_at)"
        " SELECT 'big' || i, 'ingest', 'pending', ?2, i, i FROM k",
        [n - 1, json.dumps(INGEST)],
        "seed",
    )
    assert len((await store.claim(worker_id="w", limit=n)).jobs) == n
    before = store.statements
    answers = await store.complete_many([Completion(f"big{i}", 1, {}) for i in range(n)])
    assert store.statements == before + 3
    assert set(answers.values()) == {"applied"} and len(answers) == n
    assert (await store.counts()).inflight == 0


@pytest.mark.parametrize("kind", ["complete", "fail", "retry"])
async def test_a_lost_answer_after_a_batched_write_is_checked_per_row(
    wire: JobStore, server: HranaServer, kind: str
) -> None:
    store = wire
    await running(store, 3, max_retries=0)
    # o2 finished before this write (another outcome); o1 has a retry left, o0 has none.
    assert await store.fail("o2", 1, error="x", kind="transient") == "applied"
    await store._run("UPDATE audio_jobs SET max_retries = 1 WHERE job_id = 'o1'", [], "seed")
    before = server.stats.statements
    server.faults.drop(after_execute=True, match="FROM v WHERE")
    ids = ["o0", "o1", "o2"]
    if kind == "complete":
        answers = await store.complete_many([Completion(i, 1, {}) for i in ids])
        expected = {"o0": "applied", "o1": "applied", "o2": "stale"}
    elif kind == "fail":
        answers = await store.fail_many([Failure(i, 1, "bad", "permanent") for i in ids])
        expected = {"o0": "applied", "o1": "applied", "o2": "stale"}
    else:
        answers = await store.retry_many([Requeue(i, 1, "again", kind="lost") for i in ids])
        expected = {"o0": "failed", "o1": "requeued", "o2": "stale"}
    assert server.faults.fired == ["drop_after"]
    # The lost try, its retry (which changes nothing), one read-back of the rows.
    assert server.stats.statements - before == 3
    assert answers == expected
    rows = await store.get_many(ids)
    assert rows["o2"].error_kind == "transient"  # the earlier outcome was not overwritten
