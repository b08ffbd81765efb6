"""Job store cost per job and claim throughput, against the original worker's pattern.

Both patterns run in this process, on the same schema and indexes, on real SQLite through
the store's backends, and the figures are printed as ratios (original / store):

- Lifecycle: JOBS jobs of 5 simulated minutes each, CONCURRENCY at a time. The clock is
  simulated (no sleeping); every statement really runs.
  * original worker: claim one row per 3 s poll; per job a heartbeat write every 5 s and a
    status read every 2 s (to notice cancellation); a completion write.
  * this store: one claim statement per batch; one heartbeat statement every 5 s for all
    running rows (it also reports cancellations); per job `set_k8s_job`, `complete`, and the
    two attempts-ledger rows.
- Claim throughput: claim CLAIM_ROWS rows one per statement (original) vs in batches of
  CONCURRENCY (store), on `file:` (sqlite3 on the store's thread) and through the Hrana test
  server over HTTP (`/v2/pipeline`, the store's aiohttp client).

Rows written are exact (rows each statement changed). Rows read follow the index-seek model
that EXPLAIN QUERY PLAN backs (tests/store/test_plans.py): a statement reads the rows it
matches or returns, since every lookup is an index or primary-key search; Turso bills a
table scan for every row of the table instead.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as a script (`make bench`): the repository root holds the packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.settings import DbSettings
from controller.store import Beat, JobStore
from controller.store.batches import Batches, Ended, Started
from devcluster.hrana_server import running_server

JOBS = 40
CONCURRENCY = 10
RUN_SECONDS = 5 * 60
CLAIM_ROWS = 2_000
PAYLOAD = {"url": "https://example.com/song"}

ORIGINAL_CLAIM = (
    "UPDATE audio_jobs SET status = 'processing', attempt = attempt + 1, claimed_by = ?1,"
    " started_at = ?2, updated_at = ?2 WHERE job_id = (SELECT job_id FROM audio_jobs"
    " WHERE status = 'pending' ORDER BY created_at LIMIT 1) AND status = 'pending'"
    " RETURNING job_id, attempt"
)
ORIGINAL_HEARTBEAT = (
    "UPDATE audio_jobs SET updated_at = ?2, stage = ?3, progress = ?4 WHERE job_id = ?1"
)
ORIGINAL_STATUS = "SELECT status FROM audio_jobs WHERE job_id = ?1"
ORIGINAL_COMPLETE = (
    "UPDATE audio_jobs SET status = 'complete', result = ?2, progress = 100,"
    " finished_at = ?3, updated_at = ?3 WHERE job_id = ?1 AND status = 'processing'"
)


@dataclass
class Tally:
    statements: int = 0
    rows_read: int = 0
    rows_written: int = 0


class Counting:
    """Wraps the store's backend and counts what each statement did."""

    def __init__(self, inner: Any, tally: Tally) -> None:
        self.inner = inner
        self.tally = tally

    async def execute(self, sql: str, args: list[Any]) -> Any:
        rs = await self.inner.execute(sql, args)
        self.tally.statements += 1
        head = sql.lstrip().split(None, 1)[0].upper()
        if head in ("UPDATE", "INSERT", "WITH"):
            written = max(rs.rows_affected, len(rs.rows))
            self.tally.rows_written += written
            self.tally.rows_read += written
        else:
            self.tally.rows_read += len(rs.rows)
        return rs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def open_counted(url: str) -> tuple[JobStore, Tally]:
    store = await JobStore.open(DbSettings(url=url))
    tally = Tally()
    store._calls.backend = Counting(store._calls.backend, tally)
    return store, tally


async def seed(store: JobStore, n: int, prefix: str) -> None:
    for i in range(n):
        await store.insert(job_id=f"{prefix}{i}", type="ingest", payload=PAYLOAD, now_ms=i)


async def original_lifecycle(url: str) -> Tally:
    store, tally = await open_counted(url)
    await seed(store, JOBS, "o")
    base = tally.statements, tally.rows_read, tally.rows_written
    running: dict[str, int] = {}  # job id -> start second
    done = 0
    t = 0
    while done < JOBS:
        now = 1_000_000 + t * 1000
        # The original worker runs one job per process; CONCURRENCY processes, each polling.
        if t % 3 == 0:
            for _ in range(CONCURRENCY - len(running)):
                rs, _ = await store._run(ORIGINAL_CLAIM, ["orig", now], "claim")
                if not rs.rows:
                    break
                running[str(rs.rows[0][0])] = t
        for job_id, start in list(running.items()):
            age = t - start
            if age and age % 5 == 0:
                await store._run(ORIGINAL_HEARTBEAT, [job_id, now, "render", age // 3], "hb")
            if age and age % 2 == 0:
                await store._run(ORIGINAL_STATUS, [job_id], "status")
            if age >= RUN_SECONDS:
                await store._run(ORIGINAL_COMPLETE, [job_id, "{}", now], "complete")
                del running[job_id]
                done += 1
        t += 1
    await store.close()
    return Tally(
        tally.statements - base[0], tally.rows_read - base[1], tally.rows_written - base[2]
    )


async def store_lifecycle(url: str) -> Tally:
    store, tally = await open_counted(url)
    batches = Batches(store)  # one row per statement here: the seed's pattern
    await seed(store, JOBS, "s")
    base = tally.statements, tally.rows_read, tally.rows_written
    running: dict[str, tuple[int, int]] = {}  # job id -> (attempt, start second)
    done = 0
    t = 0
    while done < JOBS:
        now = 1_000_000 + t * 1000
        if t % 3 == 0 and len(running) < CONCURRENCY:
            claim = await store.claim(worker_id="ctl", limit=CONCURRENCY - len(running), now_ms=now)
            for job in claim.jobs:
                running[job.row.job_id] = (job.row.attempt, t)
                jid, attempt = job.row.job_id, job.row.attempt
                await batches.set_k8s_jobs([(jid, attempt, f"aj-{jid}")])
                await batches.attempts_started([Started(jid, attempt, "p", "n", now)])
        if t % 5 == 0 and running:
            beats = [Beat(j, a, "render", min(99, (t - s) // 3)) for j, (a, s) in running.items()]
            gone = await store.heartbeat(beats, now_ms=now)
            assert not gone
        for job_id, (attempt, start) in list(running.items()):
            if t - start >= RUN_SECONDS:
                assert await store.complete(job_id, attempt, {}, now_ms=now) == "applied"
                await batches.attempts_ended([Ended(job_id, attempt, 0, None, now)])
                del running[job_id]
                done += 1
        t += 1
    await store.close()
    return Tally(
        tally.statements - base[0], tally.rows_read - base[1], tally.rows_written - base[2]
    )


async def claim_throughput(url: str, batch: int) -> float:
    store = await JobStore.open(DbSettings(url=url))
    await seed(store, CLAIM_ROWS, f"c{batch}-")
    claimed = 0
    started = time.perf_counter()
    if batch == 1:
        while True:
            rs, _ = await store._run(ORIGINAL_CLAIM, ["orig", 1], "claim")
            if not rs.rows:
                break
            claimed += 1
    else:
        while True:
            claim = await store.claim(worker_id="ctl", limit=batch)
            if not claim.jobs:
                break
            claimed += len(claim.jobs)
    elapsed = time.perf_counter() - started
    await store.close()
    assert claimed == CLAIM_ROWS, claimed
    return claimed / elapsed


def per_job(t: Tally) -> tuple[float, float, float]:
    return t.statements / JOBS, t.rows_read / JOBS, t.rows_written / JOBS


async def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        orig = await original_lifecycle(f"file:{tmp / 'orig.db'}")
        ours = await store_lifecycle(f"file:{tmp / 'store.db'}")
        print(
            f"lifecycle: {JOBS} jobs x {RUN_SECONDS // 60} simulated min, "
            f"{CONCURRENCY} at a time, heartbeat 5 s"
        )
        print(f"{'per job':<22}{'original':>10}{'store':>10}{'ratio':>9}")
        for name, a, b in zip(
            ("statements", "rows read (model)", "rows written"),
            per_job(orig),
            per_job(ours),
            strict=True,
        ):
            print(f"{name:<22}{a:>10.1f}{b:>10.1f}{a / b:>8.1f}x")

        print(f"claim throughput: {CLAIM_ROWS} rows, one per statement vs batches of {CONCURRENCY}")
        with running_server(str(tmp / "served.db")) as server:
            for label, url in (("file:", f"file:{tmp / 'tp.db'}"), ("http://", server.url("http"))):
                one = await claim_throughput(url, 1)
                many = await claim_throughput(url, CONCURRENCY)
                print(
                    f"  {label:<7} original {one:8.0f} jobs/s   store {many:8.0f} jobs/s"
                    f"   ratio {many / one:.1f}x"
                )
        print(
            "  (with the 3 s poll: original 1 job per poll = 0.33 jobs/s per worker; "
            f"store up to {CONCURRENCY} per poll = {CONCURRENCY / 3:.2f} jobs/s per controller)"
        )


if __name__ == "__main__":
    asyncio.run(main())
